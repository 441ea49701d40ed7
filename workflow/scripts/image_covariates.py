"""Rule script: contrast, brightness and colourfulness per image, and their regression on d with size, similarity
and length."""

import pandas as pd

from clip_interp.io import read_parquet_metadata, write_parquet
from clip_interp.negation.covariates import covariate_regressions, covariate_table, plot_covariates
from clip_interp.plotting import save_figure
from clip_interp.workflow import run_rule


def main(smk, log):
    instances = pd.read_parquet(smk.input.preliminary)
    covariates = covariate_table(instances, pd.read_parquet(smk.input.table), smk.input.images)
    coefficients, info = covariate_regressions(covariates, alpha=smk.params.alpha)
    for name, fit in info.items():
        log.info("%s: %s", name, fit)
        if fit["constant_predictors_dropped"]:
            log.warning("%s: constant predictor(s) dropped: %s", name, fit["constant_predictors_dropped"])
    meta = {"model": smk.wildcards.model, "variant": read_parquet_metadata(smk.input.preliminary).get("variant"),
            "alpha": smk.params.alpha, "n_instances": len(covariates), "models": info}
    write_parquet(covariates, smk.output.covariates, meta)
    write_parquet(coefficients, smk.output.regression, meta)
    save_figure(plot_covariates(coefficients, smk.wildcards.model, smk.params.alpha), [smk.output.png, smk.output.pdf])


run_rule(snakemake, main)  # noqa: F821
