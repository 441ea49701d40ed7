"""Rule script: relative size of each instance's subject (CLIPSeg or the synthetic benchmark's masks)."""

import functools

import pandas as pd

from clip_interp.images import POLICY_DESCRIPTIONS
from clip_interp.io import write_parquet
from clip_interp.models.loading import resolve_device
from clip_interp.negation.subject_size import (
    clipseg_sizes,
    describe_sizes,
    load_clipseg,
    size_agreement,
    subject_size_table,
)
from clip_interp.nlp import load_spacy
from clip_interp.workflow import run_rule


def main(smk, log):
    source, threshold = smk.params.source, float(smk.params.threshold)
    dataset = pd.read_parquet(smk.input.table)
    masks = {"valse_json": smk.input.valse, "masks_dir": smk.input.masks} if hasattr(smk.input, "masks") else {}
    clipseg = None
    model_id = None
    if source == "clipseg":
        model_id = str(smk.params.clipseg_model)
        device = resolve_device(smk.params.device)
        processor, segmenter = load_clipseg(model_id, device)
        log.info("CLIPSeg %s on %s, threshold %.3f; %s", model_id, device, threshold, POLICY_DESCRIPTIONS["stop"])
        clipseg = functools.partial(clipseg_sizes, processor, segmenter, threshold=threshold,
                                    batch_size=smk.params.batch_size)

    table, info = subject_size_table(dataset, load_spacy(smk.params.spacy_model), source=source, threshold=threshold,
                                     clipseg=clipseg, images_dir=smk.input.images, **masks)
    counts = info["counts"]
    log.info("%d instances: %d sized, %d with the negation in the caption (no size)", counts["n_instances"],
             counts["n_sized"], counts["n_negation_in_caption"])
    for name in ("empty_subject", "no_negator"):
        if counts[f"n_{name}"]:
            log.warning("%d instances with the negation in the foil get no size (%s): %s", counts[f"n_{name}"],
                        name, info[f"{name}_keys"][:20])
    meta = {"source": source, "clipseg_model": model_id, "threshold": threshold, "spacy_model": smk.params.spacy_model,
            "dataset": smk.input.table, **info, "size_summary": describe_sizes(table)}
    if source == "clipseg":
        meta.update(unreadable_images="stop", unreadable_images_policy=POLICY_DESCRIPTIONS["stop"])
    if source == "clipseg" and info["has_true_masks"]:
        meta["clipseg_vs_true"] = size_agreement(table)
        log.info("CLIPSeg size vs true mask size: %s", meta["clipseg_vs_true"])
    log.info("sizes: %s", meta["size_summary"])
    write_parquet(table, smk.output[0], meta)


run_rule(snakemake, main)  # noqa: F821
