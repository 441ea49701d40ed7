"""Rule script: label every head of the analysed layers with a property, by one labeller (taxonomy, llm or
published)."""

import pandas as pd

from clip_interp.heads.steps import label_table
from clip_interp.io import write_parquet
from clip_interp.models import load_model
from clip_interp.workflow import run_rule


def main(smk, log):
    model = load_model(smk.params.model, smk.params.device)
    labels, layers = label_table(smk.wildcards.labeller, pd.read_parquet(smk.input.textspan), model,
                                 taxonomy_path=smk.input.taxonomy, n_layers=smk.params.n_layers,
                                 n_texts=smk.params.n_texts, batch_size=smk.params.batch_size,
                                 textspan_path=smk.input.textspan, examples_path=smk.input.get("examples"),
                                 cache_path=smk.params.cache, vocabulary=smk.params.vocabulary,
                                 published_path=smk.input.get("published"), spec=smk.params.model)
    log.info("%s labeller: %d heads of layers %s, %d distinct labels", smk.wildcards.labeller, len(labels), layers,
             labels["label"].nunique())
    write_parquet(labels, smk.output[0], metadata={"model": smk.wildcards.model, "labeller": smk.wildcards.labeller,
                                                   "layers": layers, "n_texts": smk.params.n_texts,
                                                   "vocabulary": smk.params.vocabulary})


run_rule(snakemake, main)  # noqa: F821
