"""Rule script: cache the text tower's activations for the negated and non-negated sentences."""

import pandas as pd

from clip_interp.io import exclusions_of
from clip_interp.models import load_model
from clip_interp.negation.caches import write_text_cache
from clip_interp.workflow import run_rule


def main(smk, log):
    df = pd.read_parquet(smk.input.table)
    model = load_model(smk.params.model, smk.params.device)
    log.info("%d instances, device %s", len(df), model.device)
    write_text_cache(model, df["key"].tolist(),
                     {"negated": [list(x) for x in df["negated_ids"]],
                      "non_negated": [list(x) for x in df["non_negated_ids"]]},
                     smk.output[0], model_id=smk.wildcards.model, batch_size=smk.params.batch_size,
                     dtype=smk.params.dtype,
                     metadata={"variant": smk.wildcards.variant, "excluded": exclusions_of([smk.input.table])})


run_rule(snakemake, main)  # noqa: F821
