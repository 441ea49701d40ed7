"""Rule script: negator selectivity of every text-tower attention head on VALSE existence (Figures 9, 10: by
negation side, as in the study, and both sides pooled)."""

import pandas as pd

from clip_interp.errors import InputError
from clip_interp.io import write_parquet
from clip_interp.negation.selectivity import (
    NUMBERING,
    check_layer,
    head_summary,
    layer_summary,
    plot_selectivity_by_position,
    plot_selectivity_heads,
    position_summary,
    read_negator_differences,
    select_instances,
    side_panels,
    valse_selectivity,
)
from clip_interp.plotting import save_figure
from clip_interp.workflow import run_rule


def scores_d(path, variant):
    scores = pd.read_parquet(path)
    part = scores[scores["variant"] == variant]
    if part.empty:
        raise InputError(f"{path} has no scores of variant {variant!r} (found {sorted(scores['variant'].unique())}); "
                         "add it to negation.dataset.variants and re-run compute_scores")
    return part.set_index("key")["d"]


def main(smk, log):
    threshold, layer, variant = float(smk.params.threshold), smk.params.layer, smk.params.variant
    model = smk.wildcards.model
    instances, counts = select_instances(pd.read_parquet(smk.input.positions))
    log.info("instances: %s", counts)
    if counts["instances"] == 0:
        raise InputError(
            f"no instance of {smk.input.positions} has positions_ok, equal_length and generic_ok ({counts}); "
            "negator selectivity needs equal-length pairs: set negation.selectivity.variant to rephrased"
        )
    s, shape = read_negator_differences(
        smk.input.text, instances["key"].tolist(), instances["negator_pos"], instances["eot_pos_negated"],
        negated_ids=instances["negated_ids"].tolist(), batch_size=smk.params.batch_size)
    layer = check_layer(layer, shape["n_layers"])
    selectivity, by_position = valse_selectivity(s, instances)
    d = scores_d(smk.input.scores, variant)
    heads = head_summary(selectivity, d, threshold)
    layers = layer_summary(selectivity, heads)
    by_side = side_panels(selectivity, by_position, d, threshold, layer)
    for panel in by_side:
        log.info("%s: %d instances, %d of %d heads with mean a > %g", panel["label"], panel["n"],
                 panel["heads"]["selective"].sum(), len(panel["heads"]), threshold)
    heads_by_side = pd.concat([panel["heads"].assign(negation=panel["label"].split()[-1]) for panel in by_side],
                              ignore_index=True)
    share = float(heads["selective"].mean())
    top = heads.sort_values("mean_a", ascending=False).head(5)
    log.info("share of heads with mean a > %g: %.3f (%d of %d)", threshold, share, heads["selective"].sum(), len(heads))
    log.info("most selective heads:\n%s", top.to_string(index=False))
    meta = {"model": model, "variant": variant, "threshold": threshold, "layer": layer, **counts, **shape,
            "share_selective_heads": share, "n_selective_heads": int(heads["selective"].sum()), "numbering": NUMBERING}
    write_parquet(selectivity, smk.output.selectivity, meta)
    write_parquet(by_position, smk.output.by_position, meta)
    write_parquet(heads, smk.output.heads, meta)
    write_parquet(layers, smk.output.layers, meta)
    write_parquet(heads_by_side, smk.output.heads_by_side, meta)
    pooled = [{"label": "both negation sides pooled", "n": counts["instances"], "heads": heads, "layers": layers,
               "position": position_summary(by_position, layer)}]
    save_figure(plot_selectivity_heads(by_side, threshold, model, variant), [smk.output.fig9_png, smk.output.fig9_pdf])
    save_figure(plot_selectivity_heads(pooled, threshold, model, variant),
                [smk.output.fig9_pooled_png, smk.output.fig9_pooled_pdf])
    save_figure(plot_selectivity_by_position(by_side, layer, model), [smk.output.fig10_png, smk.output.fig10_pdf])
    save_figure(plot_selectivity_by_position(pooled, layer, model),
                [smk.output.fig10_pooled_png, smk.output.fig10_pooled_pdf])


run_rule(snakemake, main)  # noqa: F821
