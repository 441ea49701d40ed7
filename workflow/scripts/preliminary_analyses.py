"""Rule script: per-instance properties, Table 3 (correlations), the length and size filters, Figures 6 and 7."""

import h5py
import pandas as pd

from clip_interp.errors import InputError
from clip_interp.io import read_parquet_metadata, write_parquet
from clip_interp.negation.preliminary import (
    REPEATED_CAPTION,
    correlation_table,
    instance_table,
    length_accuracy,
    pairwise_correlation_table,
    pairwise_cosine,
    plot_similarity_vs_score,
    plot_subject_size,
    repeated_caption_similarity,
    size_accuracy,
)
from clip_interp.plotting import save_figure
from clip_interp.store import read_keys
from clip_interp.workflow import run_rule


def main(smk, log):
    variant, model = smk.params.variant, smk.wildcards.model
    scores = pd.read_parquet(smk.input.scores)
    scores = scores[scores["variant"] == variant].reset_index(drop=True)
    if scores.empty:
        raise InputError(f"{smk.input.scores} has no scores of variant {variant!r} "
                         "(negation.preliminary.variant); re-run compute_scores")
    with h5py.File(smk.input.text, "r") as f:
        cosine = pairwise_cosine(f["negated/embedding"][:], f["non_negated/embedding"][:])
    sizes = pd.read_parquet(smk.input.sizes)
    size_meta = read_parquet_metadata(smk.input.sizes)
    instances, counts = instance_table(scores, pd.read_parquet(smk.input.positions), read_keys(smk.input.text),
                                       cosine, sizes)
    log.info("variant %s: %s", variant, counts)
    if counts["n_missing_from_size_table"]:
        log.warning("%d instances are not in %s; they get no size", counts["n_missing_from_size_table"],
                    smk.input.sizes)
    if counts["n_positions_failed"]:
        log.warning("%d instances have no negator position; their negator position and subject length are missing",
                    counts["n_positions_failed"])
    repeated = repeated_caption_similarity(instances)
    log.info("cosine similarity of %r with its foil: %s over %d instances (the study: about 0.91 on the variant it "
             "used)", repeated["caption"], repeated["mean_cosine"], repeated["n"])
    table3 = pairwise_correlation_table(instances)
    log.info("Table 3, each pair over the instances where both exist:\n%s",
             table3.pivot(index="variable_x", columns="variable_y", values="n").to_string())
    table3_foil, info = correlation_table(instances)
    log.info("Table 3 (foil only) over %d complete instances with the negation in the foil (%d lacking a variable)",
             info["n"], info["n_incomplete"])
    if info["constant_variables"]:
        log.warning("constant over the foil-only Table 3 instances, so without correlations: %s",
                    info["constant_variables"])
    lengths = length_accuracy(instances)
    sizes_kept = size_accuracy(instances, smk.params.min_size)
    for row in sizes_kept.itertuples():
        log.info("%s >= %g: %d of %d kept (%.1f%% removed), accuracy %.3f -> %.3f", row.size, row.min_size,
                 row.n_kept, row.n_total, 100 * row.share_removed, row.accuracy_all, row.accuracy_kept)
    size_info = {"source": size_meta.get("source"), "clipseg_model": size_meta.get("clipseg_model"),
                 "threshold": size_meta.get("threshold")}
    meta = {"model": model, "variant": variant, "counts": counts, "subject_size": size_info,
            "repeated_caption_similarity": repeated, "sequence_length": "caption tokens, SOT and EOT included"}
    write_parquet(instances, smk.output.instances, meta)
    write_parquet(table3, smk.output.table3, {
        **meta, "correlation": "pearson", "population": "each pair over the instances of both negation sides where "
                                                        "both variables exist; n per cell"})
    write_parquet(table3_foil, smk.output.table3_foil, {
        **meta, "correlation": "pearson", "population": "complete cases with the negation in the foil", **info})
    write_parquet(lengths, smk.output.length_accuracy, {
        **meta, "definition": "accuracy of the instances with seq_len <= max_seq_len (caption tokens)"})
    write_parquet(sizes_kept, smk.output.size_accuracy, {
        **meta, "definition": "negation in the foil, instances with a size; kept: size >= min_size"})
    save_figure(plot_similarity_vs_score(instances, f"{model} ({variant})", REPEATED_CAPTION),
                [smk.output.fig6_png, smk.output.fig6_pdf])
    save_figure(plot_subject_size(instances, f"{model} ({variant}, size from {size_info['source']})",
                                  min_size=smk.params.min_size),
                [smk.output.fig7_png, smk.output.fig7_pdf])


run_rule(snakemake, main)  # noqa: F821
