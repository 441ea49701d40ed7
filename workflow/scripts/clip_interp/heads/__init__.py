"""The head-properties study (CLIP-InterpreT, Madasu et al.): each head of the last layers of the image tower
labelled with a property from its TEXTSPAN texts, interpretability scores per model, and the explorer's analyses.

Layers are numbered 1..L and heads 0..H-1, as everywhere in the package (:mod:`clip_interp.models.hooked`);
the published CLIP-InterpreT tables (0-based layers) are converted where they are read
(:mod:`clip_interp.heads.published`).
"""

# The five analyses of the explorer run over the image set by the workflow, in the order of their rules and
# tables (``results/heads/{model}/analyses/{name}.parquet``); :data:`clip_interp.heads.steps.ANALYSIS_STEPS` maps
# each to its step.
ANALYSES = ("property_neighbours", "topic_maps", "contrastive_maps", "image_neighbours", "text_neighbours")


def head_title(layer: int, head: int) -> str:
    """A head in both numberings, ``L12 H3 (paper L11.H3)``: ours (layers 1..L) and the paper's and its app's (layers
    from 0); heads are numbered from 0 in both."""
    return f"L{layer} H{head} (paper L{layer - 1}.H{head})"
