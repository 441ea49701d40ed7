"""Rule script: the nearest taxonomy property of each open-vocabulary LLM label, by the model's text tower."""

import pandas as pd

from clip_interp.heads.steps import llm_label_mapping
from clip_interp.io import write_parquet
from clip_interp.models import load_model
from clip_interp.workflow import run_rule


def main(smk, log):
    model = load_model(smk.params.model, smk.params.device)
    mapping = llm_label_mapping(pd.read_parquet(smk.input.labels), model, taxonomy_path=smk.input.taxonomy,
                                batch_size=smk.params.batch_size)
    log.info("%d distinct LLM labels (%d once normalised) onto %d properties", len(mapping),
             mapping["normalised"].nunique(), mapping["property"].nunique())
    write_parquet(mapping, smk.output[0], metadata={"model": smk.wildcards.model})


run_rule(snakemake, main)  # noqa: F821
