"""Rule script: the cross-model table of the heads study, and its figures."""

import pandas as pd

from clip_interp.heads.steps import cross_model
from clip_interp.io import write_parquet
from clip_interp.workflow import run_rule


def main(smk, log):
    scores = [pd.read_parquet(path) for path in smk.input.scores]
    labels = [pd.read_parquet(path) for path in smk.input.labels]
    output = smk.output
    table, layers = cross_model(smk.params.models, scores, labels,
                                scores_figure=[output.scores_png, output.scores_pdf],
                                distribution_figure=[output.distribution_png, output.distribution_pdf],
                                layers_figure=[output.layers_png, output.layers_pdf])
    log.info("%d models, %d (model, property, layer) rows", len(table), len(layers))
    write_parquet(table, smk.output.table, metadata={"models": smk.params.models})
    write_parquet(layers, smk.output.layers, metadata={"models": smk.params.models})


run_rule(snakemake, main)  # noqa: F821
