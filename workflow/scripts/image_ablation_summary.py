"""Rule script: image ablation summary per component, negation side, segment and layer (Figures 12-14)."""

import pandas as pd

from clip_interp.io import read_parquet_metadata, write_parquet
from clip_interp.plotting import save_figure
from clip_interp.negation.ablation import ablation_summary, plot_component_ablation, plot_mha_vs_mlp
from clip_interp.workflow import run_rule


def main(smk, log):
    table = pd.read_parquet(smk.input.table)
    source = read_parquet_metadata(smk.input.table)
    seg = smk.params.segments
    summary = ablation_summary(table, seg["correct"], seg["incorrect"])
    overall = summary[summary["segment"] == "all"]
    for row in overall.itertuples():
        log.info("%s, negation in %s, layer %d: n=%d mean IAE %.4f (sem %.4f), accuracy %.3f -> %.3f",
                 row.component, row.negation, row.layer, row.n, row.mean_iae, row.sem_iae,
                 row.accuracy_before, row.accuracy_after)
    model = smk.wildcards.model
    write_parquet(summary, smk.output.summary, {
        "model": model, "variant": source.get("variant"), "components": source.get("components"),
        "segments": seg, "n_instances": source.get("n_instances"),
    })
    save_figure(plot_component_ablation(summary, "mha", model), [smk.output.fig12_png, smk.output.fig12_pdf])
    save_figure(plot_component_ablation(summary, "mlp", model), [smk.output.fig13_png, smk.output.fig13_pdf])
    save_figure(plot_mha_vs_mlp(summary, model), [smk.output.fig14_png, smk.output.fig14_pdf])


run_rule(snakemake, main)  # noqa: F821
