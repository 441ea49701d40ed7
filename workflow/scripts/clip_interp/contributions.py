"""The decomposition of a vision tower's image embedding into additive components in the joint space.

Definitions (layers 1..L, heads 0..H-1, tokens 0..T-1 with the class token at 0, as in
:mod:`clip_interp.models.hooked`):

- The class token's final residual is ``r = x0 + sum_l attn_out_l + sum_l mlp_out_l`` (all at the
  class position), with ``x0 = ln_pre(embed)[cls]``. The image embedding is
  ``e = P^T LN_post(r)``, ``LN_post(r) = gamma * (r - mu(r)) / sigma(r) + beta``.
- The attention term of head h in layer l from source token j at the class query is
  ``alpha_{l,h}(cls -> j) * v_{l,h,j} W_O[l,h]^T`` (the site ``head_source_out``); the layer's
  output bias ``b_O[l]`` belongs to no head. A layer scale, when the block has one, multiplies
  both (it is linear).
- Folding LN_post: centring is linear, so ``r - mu(r) = sum_c (c - mu(c))`` over the components
  c. With ``sigma(r)`` the sample's own scale, every component contributes
  ``P^T (gamma * (c - mu(c)) / sigma(r))`` and ``P^T beta`` is one more term, the LN bias.
  The components are the embedding term, every (layer, head, source) attention term, every
  layer's attention bias, every layer's MLP and the LN bias. This is the ``per_component``
  convention (the default), and the terms sum to ``e`` exactly.
- The ``uniform`` convention follows the paper's code: a layer's attention bias is spread
  evenly over its H x T (head, source) terms, and ``mu(r)`` and ``beta`` are spread with a
  share ``1/(2L+1)`` per group (the embedding term, each MLP layer, each attention layer; an
  attention layer's share is split evenly over its H x T terms). Component c with share
  ``w_c`` contributes ``P^T (gamma * (c - w_c mu(r)) / sigma(r) + w_c beta)``; its attention-bias
  and LN-bias terms are zero. It sums to ``e`` exactly too.

:func:`decompose` returns the terms in the units of ``e`` (they sum to it). :meth:`Decomposition.unit` divides
every term by ``||e||``, as the paper's code does before any mean, search or TEXTSPAN: the terms then sum to the
unit embedding, so their dot products with a unit text embedding add up to the image-text cosine. The
decomposition store (:mod:`clip_interp.contribution_store`) holds these unit terms and ``||e||`` per image, so
the terms in the units of ``e`` are one multiplication away.

The class-token-to-class-token attention term of layer l, ``class_attention[l]``, is the sum over heads of the
terms of source 0 (the class token itself) under the same convention (``uniform``: the share of H x 1 of the
layer's H x T terms); it is part of ``heads`` (a finer view of it), not a further summand. The paper mean-ablates
it in every layer (its "spatial" ablation).

The decomposition is built from the operations of :mod:`clip_interp.decompose` and read off one
forward of :class:`~clip_interp.models.HookedTower` with ``pooled_query_only`` (the last block runs
at the class query only): :class:`ClassTokenTerms` hooks ``head_source_out`` and ``mlp_out`` and
reads each layer's terms (:func:`~clip_interp.decompose.stack_head_terms`) through the final
readout (:class:`~clip_interp.decompose.FinalReadout`) as soon as they are computed, so at most one
layer's ``(B, H, T, D)`` tensor exists at a time; :func:`assemble_decomposition` then applies the
final LayerNorm to every term (:func:`~clip_interp.decompose.apply_final_ln`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .decompose import (
    CONVENTIONS,
    SOURCE_MODES,
    FinalReadout,
    ReadTerms,
    apply_final_ln,
    attention_bias_term,
    pooled_head_terms,
    self_source_term,
    stack_head_terms,
)
from .errors import InputError

TERMS = ("embedding_term", "heads", "attn_bias", "mlps", "ln_bias")
FIELDS = ("embedding", *TERMS)
# Per-image values beside the terms: ||e|| and the class-token-to-class-token part of `heads`.
PARTS = ("embedding_norm", "class_attention")


@dataclass
class Decomposition:
    """The additive terms of a batch's image embeddings; the last axis ``X`` is the joint space
    (``E``) or, with ``directions``, the projections on K directions.

    ``embedding_term`` (B, X); ``heads`` (B, L, H, X) summed over sources, (B, L, H, T, X) per
    source (``sources="keep"``) or (B, T, X) summed over layers and heads per source
    (``sources="map"``); ``attn_bias`` (B, L, X); ``mlps`` (B, L, X); ``ln_bias`` (B, X);
    ``embedding`` the model's own image embedding (B, E), in the joint space whatever X is;
    ``embedding_norm`` (B,) ``||e||`` of the model's embedding; ``class_attention`` (B, L, X) the
    class-token-to-class-token part of ``heads`` per layer (summed over heads), with ``sources="sum"`` only (else
    None). ``units``: ``raw`` (the terms sum to ``e``) or ``unit`` (divided by ``||e||``: they sum to ``e/||e||``).
    """

    embedding_term: torch.Tensor
    heads: torch.Tensor
    attn_bias: torch.Tensor
    mlps: torch.Tensor
    ln_bias: torch.Tensor
    embedding: torch.Tensor
    convention: str
    sources: str
    embedding_norm: torch.Tensor | None = None
    class_attention: torch.Tensor | None = None
    units: str = "raw"

    def __post_init__(self):
        if self.embedding_norm is None:
            self.embedding_norm = self.embedding.float().norm(dim=-1)

    def unit(self) -> "Decomposition":
        """The terms divided by ``||e||`` (per image), and the unit embedding: they sum to ``e/||e||``."""
        if self.units == "unit":
            return self
        norm = self.embedding_norm.clamp_min(1e-30)

        def scaled(value: torch.Tensor | None) -> torch.Tensor | None:
            return None if value is None else value / norm.view((-1,) + (1,) * (value.ndim - 1))

        return Decomposition(*(scaled(getattr(self, name)) for name in (*TERMS, "embedding")), self.convention,
                             self.sources, self.embedding_norm, scaled(self.class_attention), "unit")

    def total(self) -> torch.Tensor:
        """The sum of every term, (B, X): the image embedding (projected on the directions, if any)."""
        heads = self.heads
        if self.sources == "keep":
            heads = heads.sum(dim=3)
        head_total = heads.sum(dim=1) if self.sources == "map" else heads.sum(dim=(1, 2))
        return self.embedding_term + head_total + self.attn_bias.sum(1) + self.mlps.sum(1) + self.ln_bias


def check_vision_tower(tower) -> None:
    """An InputError unless ``tower`` is a class-token vision tower with a projection to the joint space."""
    if getattr(tower, "kind", None) != "vision" or not tower.has_class_token:
        raise InputError("the decomposition needs a vision tower with a class token at position 0 "
                         f"(got a {getattr(tower, 'kind', type(tower).__name__)} tower)")
    if tower.proj is None:
        raise InputError("the decomposition needs a vision tower with a projection to the joint space")


class ClassTokenTerms:
    """The class token's residual-stream terms, read through a :class:`~clip_interp.decompose.FinalReadout` one
    layer at a time, and the final LayerNorm's statistics of the pooled residual.

    ``embedding``: ``resid[0]`` at the class token; ``heads[l]``: block l's
    :func:`~clip_interp.decompose.stack_head_terms` with ``sources``; ``mlps[l]``: block l's ``mlp_out`` at the
    class token (all :class:`~clip_interp.decompose.ReadTerms`); ``mean``, ``scale`` (B,): ``mu(r)`` and
    ``sigma(r)``.
    :meth:`hooks` fills them during one forward; the ``add_*`` methods take the sites' values from anywhere else.
    """

    def __init__(self, tower, readout: FinalReadout, sources: str):
        self.tower, self.readout, self.sources = tower, readout, sources
        self.embedding: ReadTerms | None = None
        self.heads: dict[int, ReadTerms] = {}
        self.class_sources: dict[int, ReadTerms] = {}
        self.n_sources: int | None = None
        self.mlps: dict[int, ReadTerms] = {}
        self.mean = self.scale = None

    def hooks(self) -> dict:
        """Hooks for :meth:`~clip_interp.models.HookedTower.run` that add every term as the forward computes it.

        Per source (``keep``, ``map``) the heads are read from ``head_source_out``; summed over sources (``sum``)
        from the class query's ``z``, and the class-token-to-class-token term from its ``v`` and ``pattern``
        (:func:`~clip_interp.decompose.pooled_head_terms`, :func:`~clip_interp.decompose.self_source_term`),
        which never build the per-source (B, H, T, D) tensor.
        """
        n = self.tower.n_layers
        hooks = {("resid", 0): lambda value, key: self.add_embedding(value),
                 ("ln_final_mean", n): self._keep_mean, ("ln_final_scale", n): self._keep_scale}
        for layer in range(1, n + 1):
            hooks[("mlp_out", layer)] = lambda value, key: self.add_mlp(key[1], value)
            if self.sources != "sum":
                hooks[("head_source_out", layer)] = lambda value, key: self.add_heads(key[1], value)
                continue
            hooks[("v", layer)] = self._keep_class_values
            hooks[("pattern", layer)] = self._keep_class_self_attention
            hooks[("z", layer)] = lambda value, key: self.add_pooled_heads(key[1], value[:, 0])
        return hooks

    def _keep_class_values(self, value: torch.Tensor, key) -> None:
        self._class_values = value[:, 0]

    def _keep_class_self_attention(self, value: torch.Tensor, key) -> None:
        self._class_self_attention = value[:, :, 0, 0]
        self.n_sources = value.shape[-1]

    def add_pooled_heads(self, layer: int, z_class: torch.Tensor) -> None:
        """Block ``layer``'s head terms summed over sources from the class query's ``z`` (B, H, d_head), and its
        class-token-to-class-token term from the values and attention kept by the ``v`` and ``pattern`` hooks."""
        self.heads[layer] = self.readout.read(pooled_head_terms(self.tower, layer, z_class))
        class_source = self_source_term(self.tower, layer, self._class_self_attention, self._class_values)
        self.class_sources[layer] = self.readout.read(class_source)

    def add_embedding(self, resid: torch.Tensor) -> None:
        """The embedding term from ``resid[0]`` (B, T, D)."""
        self.embedding = self.readout.read(resid[:, 0])

    def add_heads(self, layer: int, head_source_out: torch.Tensor) -> None:
        """Block ``layer``'s head terms from its ``head_source_out`` (B, H, T, D) at the class query; with
        ``sources="sum"`` also its class-token-to-class-token term (source 0, summed over heads)."""
        self.heads[layer] = self.readout.read(stack_head_terms(self.tower, layer, head_source_out, self.sources))
        self.n_sources = head_source_out.shape[2]
        if self.sources == "sum":
            class_source = stack_head_terms(self.tower, layer, head_source_out[:, :, :1], "map")[:, 0]
            self.class_sources[layer] = self.readout.read(class_source)

    def add_mlp(self, layer: int, mlp_out: torch.Tensor) -> None:
        """Block ``layer``'s MLP term from its ``mlp_out`` (B, T, D)."""
        self.mlps[layer] = self.readout.read(mlp_out[:, 0])

    def add_statistics(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        """The final LayerNorm's ``mu(r)`` and ``sigma(r)`` (B,) (the sites ``ln_final_mean``, ``ln_final_scale``)."""
        self._keep_mean(mean, None)
        self._keep_scale(scale, None)

    def _keep_mean(self, value: torch.Tensor, key) -> None:
        self.mean = value.float()

    def _keep_scale(self, value: torch.Tensor, key) -> None:
        self.scale = value.float()


def check_options(convention: str, sources: str) -> None:
    """An InputError unless ``convention`` is one of :data:`CONVENTIONS` and ``sources`` one of :data:`SOURCE_MODES`."""
    if convention not in CONVENTIONS:
        raise InputError(f"unknown decomposition convention {convention!r}; choose from {CONVENTIONS}")
    if sources not in SOURCE_MODES:
        raise InputError(f"unknown sources mode {sources!r}; choose from {SOURCE_MODES}")


@torch.no_grad()
def decompose(tower, pixels: torch.Tensor, *, convention: str = "per_component", sources: str = "sum",
              directions: torch.Tensor | None = None) -> Decomposition:
    """Decompose the image embeddings of preprocessed ``pixels`` (B, 3, H, W) into their terms.

    ``convention``: ``per_component`` (default) or ``uniform`` (see the module docstring).
    ``sources``: ``sum`` (heads summed over source tokens, (B, L, H, X)), ``keep`` (per source,
    (B, L, H, T, X)) or ``map`` (per source, summed over layers and heads, (B, T, X)).
    ``directions`` (E, K): project every term on these joint-space directions (X = K) instead of
    returning joint-space vectors (X = E); the projection is applied before any sum, so a
    per-source map on K texts costs (B, L, H, T, K), never (B, L, H, T, E).
    """
    check_options(convention, sources)
    check_vision_tower(tower)
    terms = ClassTokenTerms(tower, FinalReadout.of(tower, directions), sources)
    out = tower.run(pixels, hooks=terms.hooks(), pooled_query_only=True)
    return assemble_decomposition(tower, terms, out.embedding.float(), convention)


def _uniform_weight(sources: str, raw: torch.Tensor, n_heads: int) -> float:
    """The share of a layer's H x T (head, source) terms that one returned term holds: 1/(HT) per term,
    1/H per head summed over sources, 1/T per source summed over heads."""
    if sources == "keep":
        return 1.0 / (n_heads * raw.shape[2])
    if sources == "sum":
        return 1.0 / n_heads
    return 1.0 / raw.shape[1]


def _attention_bias_part(tower, layer: int, terms: ClassTokenTerms) -> torch.Tensor:
    """Block ``layer``'s attention bias term under ``per_component``, (B, X)."""
    bias = terms.readout.read(attention_bias_term(tower, layer, terms.scale.device))
    batch_free = ReadTerms(bias.projection.unsqueeze(0), bias.mean.unsqueeze(0))
    return apply_final_ln(batch_free, terms.readout, terms.mean, terms.scale, "per_component")


def _uniform_attention_part(tower, layer: int, read: ReadTerms, terms: ClassTokenTerms, weight: float) -> torch.Tensor:
    """Under ``uniform``, the parts of attention terms that each hold ``weight`` of block ``layer``'s H x T
    (head, source) terms: that share of the layer's attention bias is added, and of the layer's group share
    ``1/(2L+1)`` of ``mu(r)`` and ``beta``."""
    bias = terms.readout.read(attention_bias_term(tower, layer, read.projection.device))
    with_bias = ReadTerms(read.projection + weight * bias.projection, read.mean)
    group_share = 1.0 / (2 * tower.n_layers + 1)
    return apply_final_ln(with_bias, terms.readout, terms.mean, terms.scale, "uniform", group_share * weight)


def _head_parts(tower, terms: ClassTokenTerms, convention: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The heads' parts ((B, L, H, [T,] X), or (B, T, X) for ``map``) and the attention biases' parts (B, L, X).

    ``uniform`` spreads a layer's bias evenly over its H x T (head, source) terms and gives the layer the
    share ``1/(2L+1)``, split the same way; its bias parts are zero.
    """
    readout, mean, scale = terms.readout, terms.mean, terms.scale
    heads, biases = [], []
    for layer in range(1, tower.n_layers + 1):
        read = terms.heads[layer]
        if convention == "per_component":
            heads.append(apply_final_ln(read, readout, mean, scale, convention))
            biases.append(_attention_bias_part(tower, layer, terms))
            continue
        heads.append(_uniform_attention_part(tower, layer, read, terms,
                                             _uniform_weight(terms.sources, read.projection, tower.n_heads)))
        biases.append(torch.zeros(len(scale), readout.ones.shape[0], device=readout.ones.device))
    head_parts = torch.stack(heads, dim=0).sum(0) if terms.sources == "map" else torch.stack(heads, dim=1)
    return head_parts, torch.stack(biases, dim=1)


def _class_attention_parts(tower, terms: ClassTokenTerms, convention: str) -> torch.Tensor | None:
    """Every layer's class-token-to-class-token part (B, L, X) under ``convention``, or None without it.

    ``uniform``: source 0 of each of the H heads holds ``1/(HT)`` of the layer's attention bias and share, so the
    sum over heads holds ``1/T`` of them.
    """
    if not terms.class_sources:
        return None
    readout, mean, scale = terms.readout, terms.mean, terms.scale
    parts = []
    for layer in range(1, tower.n_layers + 1):
        read = terms.class_sources[layer]
        if convention == "per_component":
            parts.append(apply_final_ln(read, readout, mean, scale, convention))
            continue
        parts.append(_uniform_attention_part(tower, layer, read, terms, 1.0 / terms.n_sources))
    return torch.stack(parts, dim=1)


def assemble_decomposition(tower, terms: ClassTokenTerms, embedding: torch.Tensor, convention: str) -> Decomposition:
    """The :class:`Decomposition` of the read ``terms`` under ``convention``: every term through
    :func:`~clip_interp.decompose.apply_final_ln` (``uniform`` gives the embedding term and each MLP the share
    ``1/(2L+1)``); ``embedding`` (B, E) is the model's own image embedding."""
    readout, mean, scale = terms.readout, terms.mean, terms.scale
    share = 1.0 / (2 * tower.n_layers + 1)
    embed_part = apply_final_ln(terms.embedding, readout, mean, scale, convention, share)
    mlps = torch.stack([apply_final_ln(terms.mlps[layer], readout, mean, scale, convention, share)
                        for layer in range(1, tower.n_layers + 1)], dim=1)
    heads, biases = _head_parts(tower, terms, convention)
    ln_bias = readout.bias.expand(len(scale), -1) if convention == "per_component" else torch.zeros_like(embed_part)
    return Decomposition(embed_part, heads, biases, mlps, ln_bias.clone(), embedding, convention, terms.sources,
                         class_attention=_class_attention_parts(tower, terms, convention))


def scores_to_maps(scores: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], *,
                   clip_negative: bool = False) -> torch.Tensor:
    """Patch scores (B, P) as soft maps (B, H, W) in [0, 1]: the patch grid upsampled bilinearly to ``size``
    (``align_corners=False``), with ``clip_negative`` every negative value then set to 0, and per image
    min-max normalised (``(m - min) / (max - min)``); a constant map has no min-max and becomes 0 everywhere."""
    rows, cols = grid
    if scores.shape[1] != rows * cols:
        raise InputError(f"{scores.shape[1]} patch scores do not fill a {rows}x{cols} patch grid")
    maps = F.interpolate(scores.float().view(-1, 1, rows, cols), size=size, mode="bilinear", align_corners=False)[:, 0]
    if clip_negative:
        maps = maps.clamp_min(0)
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-12), torch.zeros_like(maps))
