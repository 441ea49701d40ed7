"""The text-tower patching kernel that causal tracing, pair patching and MHA/MLP tracing share.

Per instance there is a caption ``c``, a foil ``f`` and an image ``i``. ``S(t, i)`` is CLIP's
logit, ``logit_scale * cos(image embedding, text embedding)``, and ``d = S(c, i) - S(f, i)``.
One of ``c`` and ``f`` is the *negated* sentence ("There are no dogs."), the other the
*non-negated* one ("There are some dogs."), both of the same token length; ``negation``
(``"caption"`` or ``"foil"``) says which one is negated.

Every patching experiment on the text tower runs the non-negated sentence with some of its
activations overwritten by the negated sentence's; ``S*`` is the similarity of this patched
sentence with the image. With the negation in the foil ``d* = S(c, i) - S*(c, i)``, with the
negation in the caption ``d* = S*(f, i) - S(f, i)``, and the effect is ``CTE = d* / d``
(:func:`tracing_effect`). The two sentences agree on every token before the negator, so under
the causal mask their activations agree there and a patch there changes nothing.

This module holds the steps those experiments share: validating the instances
(:func:`tracing_inputs`), grouping them into batches of one token length
(:func:`length_batches`), the clean forward of a batch's sentence pairs
(:func:`clean_pair_batch`), the similarities of patched runs (:func:`patched_similarities`)
and the long table of effects (:func:`tracing_frame`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..batching import row_slices
from ..encoding import token_id_lists
from ..errors import InputError
from .labels import NEGATION_SIDES

CAUSAL_TRACING_COLUMNS = [
    "key", "negation", "layer", "position", "S_caption", "S_foil", "d", "S_patched", "d_star", "cte",
]

# --------------------------------------------------------------------------- inputs


def tracing_instances(model, frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``negated_ids``, ``non_negated_ids``, ``negator_pos`` and ``eot_pos`` to a table of sentence pairs.

    ``frame`` needs ``key``, ``negation``, ``negated`` and ``non_negated`` (sentences); the
    negator position is the first token at which the two encodings differ.
    """
    out = frame.copy()
    neg = token_id_lists(model, frame["negated"])
    non = token_id_lists(model, frame["non_negated"])
    negator = []
    for key, a, b in zip(frame["key"], neg, non):
        if len(a) != len(b):
            raise InputError(f"instance {key!r}: negated and non-negated sentences have {len(a)} and {len(b)} "
                             "tokens; causal tracing needs the rephrased variant (equal lengths)")
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        if not diff:
            raise InputError(f"instance {key!r}: negated and non-negated sentences are identical")
        negator.append(diff[0])
    out["negated_ids"], out["non_negated_ids"] = neg, non
    out["negator_pos"] = negator
    out["eot_pos"] = [len(a) - 1 for a in neg]
    return out


def tracing_inputs(instances: pd.DataFrame):
    """Validated (negated ids, non-negated ids, negator positions, EOT positions) of ``instances``.

    ``instances`` is :func:`tracing_instances`' table. The id lists come back as lists of ints, the
    positions as int64 arrays (N,); the EOT position is the last token's. Raises InputError when a
    column is missing, ``negation`` is not a side, the sentences differ in length or before the
    negator, a given ``eot_pos`` is not the last position or the negator lies outside 1..EOT.
    """
    needed = {"key", "negation", "negated_ids", "non_negated_ids", "negator_pos"}
    missing = needed - set(instances.columns)
    if missing:
        raise InputError(f"causal tracing instances lack column(s) {sorted(missing)}; see tracing_instances()")
    neg = [[int(i) for i in s] for s in instances["negated_ids"]]
    non = [[int(i) for i in s] for s in instances["non_negated_ids"]]
    negator = instances["negator_pos"].to_numpy(dtype=np.int64)
    eot = np.asarray([len(s) - 1 for s in neg], dtype=np.int64)
    given_eot = instances["eot_pos"].to_numpy(dtype=np.int64) if "eot_pos" in instances else eot
    for n, key in enumerate(instances["key"]):
        side = instances["negation"].iloc[n]
        if side not in NEGATION_SIDES:
            raise InputError(f"instance {key!r}: negation is {side!r}, not 'caption' or 'foil'")
        if len(neg[n]) != len(non[n]):
            raise InputError(f"instance {key!r}: negated/non-negated ids differ in length "
                             f"({len(neg[n])} vs {len(non[n])})")
        if given_eot[n] != eot[n]:
            raise InputError(f"instance {key!r}: eot_pos {given_eot[n]} is not the last position {eot[n]}")
        if not 0 < negator[n] <= eot[n]:
            raise InputError(f"instance {key!r}: negator_pos {negator[n]} outside 1..{eot[n]}")
        if neg[n][: negator[n]] != non[n][: negator[n]]:
            raise InputError(f"instance {key!r}: the sentences differ before the negator position {negator[n]}")
    return neg, non, negator, eot


# --------------------------------------------------------------------------- batches and clean runs


def aligned_image_embeddings(image_embeddings: torch.Tensor, n: int, device) -> torch.Tensor:
    """The (N, E) image embeddings on ``device``, checked to be one per instance."""
    if image_embeddings.shape[0] != n:
        raise InputError(f"{image_embeddings.shape[0]} image embeddings for {n} instances")
    return image_embeddings.to(device)


def tracing_mask(negator: np.ndarray, eot: np.ndarray, t: int, device) -> torch.Tensor:
    """(B, T): the positions traced per instance, from the negator to EOT (earlier ones cannot differ)."""
    positions = np.arange(t)[None, :]
    return torch.as_tensor((positions >= negator[:, None]) & (positions <= eot[:, None]), device=device)


def clean_pair_run(model, neg, non, eot: np.ndarray, cache):
    """One clean text forward of a batch's negated sentences (rows 0..B-1) and non-negated ones (B..2B-1),
    caching ``cache``."""
    dev = model.device
    ids = model.tokenizer.pad(neg + non, int(eot.max()) + 1).to(dev)
    eot_t = torch.as_tensor(eot, device=dev)
    return model.text.run(ids, cache=cache, pool_index=torch.cat([eot_t, eot_t]))


@dataclass
class CleanPairBatch:
    """A batch's clean forward (:func:`clean_pair_run`): the run, the EOT positions (B,), the padded
    length T, and the similarities S(negated), S(non-negated) (B,) with the batch's images."""

    run: object
    eot: torch.Tensor
    n_tokens: int
    s_negated: torch.Tensor
    s_non_negated: torch.Tensor

    @property
    def size(self) -> int:
        return len(self.eot)


def clean_pair_batch(model, neg, non, eot: np.ndarray, image_emb: torch.Tensor, cache) -> CleanPairBatch:
    """:func:`clean_pair_run` of one batch and the similarities of both sentences with its images ``image_emb``."""
    run = clean_pair_run(model, neg, non, eot, cache)
    b = len(neg)
    return CleanPairBatch(run, torch.as_tensor(eot, device=model.device), int(eot.max()) + 1,
                          model.similarity(image_emb, run.embedding[:b]),
                          model.similarity(image_emb, run.embedding[b:]))


def patched_similarities(model, image_emb: torch.Tensor, patched) -> torch.Tensor:
    """S* (n_patched_layers, n_rows): the similarity of each patched run's embedding (``patched.embeddings``,
    (n_patched_layers, n_rows, E)) with the image of its row (``patched.rows``)."""
    n_layers, n_rows = patched.embeddings.shape[:2]
    emb = patched.embeddings.reshape(n_layers * n_rows, -1)
    return model.similarity(image_emb[patched.rows].repeat(n_layers, 1), emb).view(n_layers, n_rows)


def tracing_effect(s_caption, s_foil, s_patched, in_caption):
    """``d*`` and ``CTE = d* / d``: ``d* = S* - S(f)`` with the negation in the caption, ``S(c) - S*`` in the foil."""
    d = s_caption - s_foil
    d_star = np.where(in_caption, s_patched - s_foil, s_caption - s_patched)
    with np.errstate(divide="ignore", invalid="ignore"):
        cte = d_star / d + 0.0
    return d_star, cte


def tracing_frame(instances, s_neg, s_non, s_patch_rows, n_layers) -> pd.DataFrame:
    """The long causal-tracing table (:data:`CAUSAL_TRACING_COLUMNS`) from per-instance similarities.

    ``s_neg`` and ``s_non`` (N,) are S(negated) and S(non-negated) with each instance's image,
    ``s_patch_rows`` per instance the patched similarities S* of shape (``n_layers`` + 1, T_n).
    One row per instance x layer x position, in that order; ``d*`` and ``CTE`` from
    :func:`tracing_effect`.
    """
    in_caption = instances["negation"].to_numpy() == "caption"
    s_cap = np.where(in_caption, s_neg, s_non)
    s_foil = np.where(in_caption, s_non, s_neg)
    sizes = [a.size for a in s_patch_rows]
    lengths = [a.shape[1] for a in s_patch_rows]

    def rep(values):
        return np.repeat(np.asarray(values), sizes)

    s_patched = np.concatenate([a.reshape(-1) for a in s_patch_rows])
    layer = np.concatenate([np.repeat(np.arange(n_layers + 1), t) for t in lengths])
    position = np.concatenate([np.tile(np.arange(t), n_layers + 1) for t in lengths])
    s_c, s_f, cap = rep(s_cap), rep(s_foil), rep(in_caption)
    d = s_c - s_f
    d_star, cte = tracing_effect(s_c, s_f, s_patched, cap)
    return pd.DataFrame({
        "key": rep(instances["key"].to_numpy()), "negation": rep(instances["negation"].to_numpy()),
        "layer": layer.astype(np.int16), "position": position.astype(np.int16),
        "S_caption": s_c, "S_foil": s_f, "d": d, "S_patched": s_patched, "d_star": d_star, "cte": cte,
    }, columns=CAUSAL_TRACING_COLUMNS)


def length_batches(eot: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Instance indices in batches of at most ``batch_size``, each of one token length."""
    batches = []
    for length in np.unique(eot):
        same = np.flatnonzero(eot == length)
        batches.extend(same[sl] for sl in row_slices(len(same), batch_size))
    return batches
