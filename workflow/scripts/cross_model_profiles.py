"""Rule script: localisation and selectivity per layer, one line per model."""

import pandas as pd

from clip_interp.io import write_parquet
from clip_interp.negation.cross_model import check_profiles, layer_profiles, plot_layer_profiles
from clip_interp.plotting import save_figure
from clip_interp.workflow import run_rule


def main(smk, log):
    models = smk.params.models
    localisation = {m: pd.read_parquet(p) for m, p in zip(models, smk.input.localisation)}
    selectivity = {m: pd.read_parquet(p) for m, p in zip(models, smk.input.selectivity)}
    profiles = layer_profiles(localisation, selectivity)
    empty = check_profiles(profiles)
    if empty:
        log.warning("models without any finite layer value (no instance left after filtering?): %s", empty)
    write_parquet(profiles, smk.output.table, {"models": models, "models_without_values": empty})
    save_figure(plot_layer_profiles(profiles), [smk.output.png, smk.output.pdf])
    log.info("%d models, %d profile rows", len(models), len(profiles))


run_rule(snakemake, main)  # noqa: F821
