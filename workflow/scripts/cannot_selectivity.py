"""Rule script: negator selectivity of the text-tower heads on CANNOT pairs, compared with VALSE (Figure 11)."""

import pandas as pd

from clip_interp.errors import InputError
from clip_interp.io import read_parquet_metadata, write_parquet
from clip_interp.negation.selectivity import (
    NUMBERING,
    cannot_head_summary,
    cannot_selectivity,
    plot_cannot_comparison,
    read_negator_differences,
)
from clip_interp.plotting import save_figure
from clip_interp.workflow import run_rule


def main(smk, log):
    threshold, model = float(smk.params.threshold), smk.wildcards.model
    pairs = pd.read_parquet(smk.input.pairs)
    if pairs.empty:
        raise InputError(
            f"{smk.input.pairs} holds no CANNOT pairs; check the CANNOT source and cannot_pairs.report.json")
    keys = pairs["source_index"].astype(str).tolist()
    s, shape = read_negator_differences(smk.input.cache, keys, pairs["negator_pos"], pairs["eot_pos"],
                                        batch_size=smk.params.batch_size)
    selectivity = cannot_selectivity(s, keys)
    valse_heads = pd.read_parquet(smk.input.valse_heads)
    heads, correlation = cannot_head_summary(selectivity, valse_heads, threshold)
    n_valse = read_parquet_metadata(smk.input.valse_heads).get("instances")
    share = float(heads["selective"].mean())
    log.info("%d CANNOT pairs; share of heads with mean a > %g: %.3f", len(pairs), threshold, share)
    log.info("Pearson r across %d heads of VALSE vs CANNOT mean a: %.3f (p = %.3g)",
             correlation["heads_compared"], correlation["pearson_r"], correlation["pearson_p"])
    meta = {"model": model, "threshold": threshold, "n_pairs": len(pairs), **shape, "share_selective_heads": share,
            "valse_vs_cannot": correlation, "numbering": NUMBERING}
    write_parquet(selectivity, smk.output.table, meta)
    write_parquet(heads, smk.output.heads, meta)
    save_figure(plot_cannot_comparison(valse_heads, heads, correlation["pearson_r"], correlation["pearson_p"],
                                       threshold, model, len(pairs), n_valse),
                [smk.output.fig11_png, smk.output.fig11_pdf])


run_rule(snakemake, main)  # noqa: F821
