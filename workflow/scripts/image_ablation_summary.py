"""Rule script: image ablation summary per component, negation side, segment and layer; the IAE averages
pooled over both sides; Figures 12-14 (correct segment, all instances, by segment) and the caption/foil
score changes."""

import pandas as pd

from clip_interp.io import read_parquet_metadata, write_parquet
from clip_interp.negation.image_ablation_summary import (
    FIGURE_SEGMENT,
    ablation_summary,
    iae_averages,
    plot_ablation_by_segment,
    plot_caption_foil_scores,
    plot_component_ablation,
    plot_mha_vs_mlp,
)
from clip_interp.plotting import save_figure
from clip_interp.workflow import run_rule


def main(smk, log):
    table = pd.read_parquet(smk.input.table)
    source = read_parquet_metadata(smk.input.table)
    seg = smk.params.segments
    summary = ablation_summary(table, seg["correct"], seg["incorrect"])
    overall = summary[summary["segment"] == "all"]
    for row in overall.itertuples():
        log.info("%s, negation in %s, layer %d: n=%d mean IAE %.4f (sem %.4f), accuracy %.3f -> %.3f, "
                 "mean S*(c)-S(c) %.4f, S*(f)-S(f) %.4f", row.component, row.negation, row.layer, row.n,
                 row.mean_iae, row.sem_iae, row.accuracy_before, row.accuracy_after, row.mean_delta_S_caption,
                 row.mean_delta_S_foil)
    averages = iae_averages(table, seg["correct"], seg["incorrect"])
    for row in averages[averages["negation"] == "both"].itertuples():
        log.info("IAE averaged over layers, both sides pooled, %s, %s: %.4f (n=%d)", row.component, row.segment,
                 row.mean_iae_over_layers, row.n)
    model = smk.wildcards.model
    meta = {"model": model, "variant": source.get("variant"), "components": source.get("components"),
            "segments": seg, "n_instances": source.get("n_instances"), "figure_segment": FIGURE_SEGMENT}
    write_parquet(summary, smk.output.summary, meta)
    write_parquet(averages, smk.output.averages, {
        **meta, "definition": "mean over ablated layers of the mean IAE over the group's instances; "
                              "negation 'both' pools both sides"})
    out = smk.output
    for segment, suffix in ((FIGURE_SEGMENT, ""), ("all", "_all")):
        save_figure(plot_component_ablation(summary, "mha", model, segment),
                    [out[f"fig12{suffix}_png"], out[f"fig12{suffix}_pdf"]])
        save_figure(plot_component_ablation(summary, "mlp", model, segment),
                    [out[f"fig13{suffix}_png"], out[f"fig13{suffix}_pdf"]])
        save_figure(plot_mha_vs_mlp(summary, model, segment), [out[f"fig14{suffix}_png"], out[f"fig14{suffix}_pdf"]])
    for name, components in (("fig12", ["mha"]), ("fig13", ["mlp"]), ("fig14", ["mha", "mlp"])):
        save_figure(plot_ablation_by_segment(summary, model, components),
                    [out[f"{name}_segments_png"], out[f"{name}_segments_pdf"]])
    save_figure(plot_caption_foil_scores(summary, model), [out.scores_png, out.scores_pdf])


run_rule(snakemake, main)  # noqa: F821
