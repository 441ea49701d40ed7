"""Rule script: mean causal tracing effects and localisation per negation side and segment (Figure 8: the correct
segment, all instances, and by segment)."""

import pandas as pd

from clip_interp.errors import InputError
from clip_interp.io import read_parquet_metadata, write_parquet
from clip_interp.negation.tracing import (
    attach_segments,
    drop_undefined_effects,
    localisation_table,
    plot_causal_tracing,
    plot_causal_tracing_by_segment,
    summarise_effects,
)
from clip_interp.plotting import save_figure
from clip_interp.workflow import run_rule


def main(smk, log):
    generic = pd.read_parquet(smk.input.generic)
    tracing_meta = read_parquet_metadata(smk.input.generic)
    variant = smk.params.variant
    made_with = read_parquet_metadata(smk.input.scores).get("segments")
    if made_with is not None and made_with != dict(smk.params.segments):
        raise InputError(f"{smk.input.scores} was made with segment thresholds {made_with}, but the config has "
                         f"{dict(smk.params.segments)}; re-run compute_scores")
    generic = attach_segments(generic, pd.read_parquet(smk.input.scores), variant, smk.input.scores)
    generic, undefined = drop_undefined_effects(generic)
    if undefined:
        log.warning("%d instances have d = 0 and no defined CTE; left out: %s", len(undefined), undefined[:10])
    summary = summarise_effects(generic, n_layers=tracing_meta.get("n_layers"))
    localisation = localisation_table(summary, generic)
    counts = generic.drop_duplicates("key").groupby(["negation", "segment"]).size()
    for (side, seg), n in counts.items():
        log.info("negation in %s, %s: %d instances", side, seg, n)
    meta = {
        "model": smk.wildcards.model, "variant": variant, "segments": smk.params.segments,
        "n_instances": int(generic["key"].nunique()), "undefined_cte": len(undefined), "undefined_cte_keys": undefined,
        "selection": tracing_meta.get("selection", {}),
        "localisation": "population SD (ddof 0) over negator, subject_first, subject_further, full_stop, EOT; "
                        "'localisation' on the averaged profile, 'localisation_instance_mean' per instance then mean",
    }
    write_parquet(summary, smk.output.summary, meta)
    write_parquet(localisation, smk.output.localisation, meta)
    save_figure(plot_causal_tracing(summary, localisation, smk.wildcards.model, variant),
                [smk.output.fig8_png, smk.output.fig8_pdf])
    save_figure(plot_causal_tracing(summary, localisation, smk.wildcards.model, variant, segment="all"),
                [smk.output.fig8_all_png, smk.output.fig8_all_pdf])
    save_figure(plot_causal_tracing_by_segment(summary, localisation, smk.wildcards.model, variant),
                [smk.output.fig8_segments_png, smk.output.fig8_segments_pdf])


run_rule(snakemake, main)  # noqa: F821
