"""Rule script: scores and segments (Tables 1 and 2, Figure 3) from the activation caches."""

import h5py
import pandas as pd

from clip_interp.io import write_parquet
from clip_interp.negation.caches import caption_foil_embeddings
from clip_interp.negation.scores import accuracy_table, classification_scores, plot_score_distribution, segment_table
from clip_interp.plotting import save_figure
from clip_interp.store import match_rows, read_keys
from clip_interp.workflow import run_rule


def variant_scores(text_cache, positions, image_cache, image_keys, image_emb, logit_scale, seg):
    table = pd.read_parquet(positions)
    keys, negation, caption_emb, foil_emb = caption_foil_embeddings(text_cache, table.set_index("key")["negation"])
    rows = match_rows(keys, image_keys, what=f"instances of {text_cache}", where=f"the image cache {image_cache}")
    return classification_scores(keys, negation, caption_emb, foil_emb, image_emb[rows], logit_scale,
                                 seg["correct"], seg["incorrect"])


def main(smk, log):
    seg = smk.params.segments
    with h5py.File(smk.input.image, "r") as f:
        image_emb = f["real/embedding"][:]
        logit_scale = float(f.attrs["logit_scale"])
    image_keys = read_keys(smk.input.image)
    parts = []
    for variant, text_cache, positions in zip(smk.params.variants, smk.input.text, smk.input.positions):
        s = variant_scores(text_cache, positions, smk.input.image, image_keys, image_emb, logit_scale, seg)
        s.insert(1, "variant", variant)
        parts.append(s)
        log.info("%s: %d instances, accuracy %.3f", variant, len(s), s.correct.mean())
    scores = pd.concat(parts, ignore_index=True)
    meta = {"model": smk.wildcards.model, "segments": seg}
    write_parquet(scores, smk.output.scores, meta)
    write_parquet(accuracy_table(scores), smk.output.table1, meta)
    write_parquet(segment_table(scores), smk.output.table2, meta)
    save_figure(plot_score_distribution(scores, seg["correct"], seg["incorrect"], smk.wildcards.model),
                [smk.output.fig3_png, smk.output.fig3_pdf])


run_rule(snakemake, main)  # noqa: F821
