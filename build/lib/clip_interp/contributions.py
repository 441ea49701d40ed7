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

Divided by ``||e||`` the terms sum to the unit embedding, so their dot products with a unit
text embedding add up to the image-text cosine.

The decomposition is read off one forward of :class:`~clip_interp.models.HookedTower` with
``pooled_query_only`` (the last block runs at the class query only): hooks on
``head_source_out`` and ``mlp_out`` reduce each layer's terms to the joint space as soon as
they are computed, so at most one layer's ``(B, H, T, D)`` tensor exists at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import InputError

CONVENTIONS = ("per_component", "uniform")
TERMS = ("embedding_term", "heads", "attn_bias", "mlps", "ln_bias")
FIELDS = ("embedding", *TERMS)
SOURCE_MODES = ("sum", "keep", "map")


@dataclass
class Decomposition:
    """The additive terms of a batch's image embeddings; the last axis ``X`` is the joint space
    (``E``) or, with ``directions``, the projections on K directions.

    ``embedding_term`` (B, X); ``heads`` (B, L, H, X) summed over sources, (B, L, H, T, X) per
    source (``sources="keep"``) or (B, T, X) summed over layers and heads per source
    (``sources="map"``); ``attn_bias`` (B, L, X); ``mlps`` (B, L, X); ``ln_bias`` (B, X);
    ``embedding`` the model's own image embedding (B, E), in the joint space whatever X is.
    """

    embedding_term: torch.Tensor
    heads: torch.Tensor
    attn_bias: torch.Tensor
    mlps: torch.Tensor
    ln_bias: torch.Tensor
    embedding: torch.Tensor
    convention: str
    sources: str

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


class _Collector:
    """Hooks that reduce each layer's terms to the readout space as the forward computes them."""

    def __init__(self, tower, readout: torch.Tensor, sources: str):
        self.tower, self.readout, self.sources = tower, readout, sources
        self.embed: tuple[torch.Tensor, torch.Tensor] | None = None
        self.heads: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mlps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mu = self.sigma = None

    def hooks(self) -> dict:
        n = self.tower.n_layers
        hooks = {("resid", 0): self._on_embedding, ("ln_final_mean", n): self._on_mean, ("ln_final_scale", n): self._on_scale}
        for layer in range(1, n + 1):
            hooks[("head_source_out", layer)] = self._on_heads
            hooks[("mlp_out", layer)] = self._on_mlp
        return hooks

    def _read(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float()
        return x @ self.readout, x.mean(dim=-1)

    def _on_embedding(self, value, key):
        self.embed = self._read(value[:, 0])

    def _on_heads(self, value, key):
        layer = key[1]
        terms = self.tower.blocks[layer - 1].ls_1(value)
        if self.sources == "sum":
            terms = terms.sum(dim=2)
        elif self.sources == "map":
            terms = terms.sum(dim=1)
        self.heads[layer] = self._read(terms)

    def _on_mlp(self, value, key):
        self.mlps[key[1]] = self._read(value[:, 0])

    def _on_mean(self, value, key):
        self.mu = value.float()

    def _on_scale(self, value, key):
        self.sigma = value.float()


def _attention_bias(tower, layer: int, device) -> torch.Tensor:
    """The (layer-scaled) output bias of layer ``layer``'s attention, (D,); zeros without a bias."""
    block = tower.blocks[layer - 1]
    if block.b_out is None:
        return torch.zeros(tower.d_model, device=device)
    return block.ls_1(block.b_out).float()


def _fold(raw: torch.Tensor, mean: torch.Tensor, share: float, mu: torch.Tensor, sigma: torch.Tensor,
          u: torch.Tensor, b: torch.Tensor, convention: str) -> torch.Tensor:
    """A component's term from ``raw = c @ (gamma P)`` (B, ..., X) and ``mean = mu(c)`` (B, ...).

    ``per_component``: ``(raw - mu(c) u) / sigma``; ``uniform``: ``(raw - share mu(r) u) / sigma + share b``,
    with ``u = gamma^T P`` and ``b = P^T beta`` (projected on the directions, if any).
    """
    view = (-1,) + (1,) * (raw.ndim - 1)
    if convention == "per_component":
        return (raw - mean.unsqueeze(-1) * u) / sigma.view(view)
    return (raw - share * mu.view(view) * u) / sigma.view(view) + share * b


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
    if convention not in CONVENTIONS:
        raise InputError(f"unknown decomposition convention {convention!r}; choose from {CONVENTIONS}")
    if sources not in SOURCE_MODES:
        raise InputError(f"unknown sources mode {sources!r}; choose from {SOURCE_MODES}")
    check_vision_tower(tower)
    proj = tower.proj.detach().float()
    readout = tower.ln_final.weight.detach().float().unsqueeze(1) * proj
    ln_bias = tower.ln_final.bias.detach().float() @ proj
    if directions is not None:
        directions = directions.to(readout.device, torch.float32)
        readout, ln_bias = readout @ directions, ln_bias @ directions
    collector = _Collector(tower, readout, sources)
    out = tower.run(pixels, hooks=collector.hooks(), pooled_query_only=True)
    u = readout.sum(dim=0)
    return _assemble(tower, collector, u, ln_bias, out.embedding.float(), convention, sources)


def _uniform_weight(sources: str, raw: torch.Tensor, n_heads: int) -> float:
    """The share of a layer's H x T (head, source) terms that one returned term holds: 1/(HT) per term,
    1/H per head summed over sources, 1/T per source summed over heads."""
    if sources == "keep":
        return 1.0 / (n_heads * raw.shape[2])
    if sources == "sum":
        return 1.0 / n_heads
    return 1.0 / raw.shape[1]


def _head_terms(tower, collector: _Collector, convention: str, sources: str, u, b, mu, sigma) -> tuple:
    """The heads' terms ((B, L, H, [T,] X), or (B, T, X) for ``map``) and the attention-bias terms (B, L, X)."""
    group_share = 1.0 / (2 * tower.n_layers + 1)
    heads, biases = [], []
    for layer in range(1, tower.n_layers + 1):
        raw, mean = collector.heads[layer]
        bias_vec = _attention_bias(tower, layer, raw.device)
        bias_raw = bias_vec @ collector.readout
        if convention == "per_component":
            heads.append(_fold(raw, mean, 0.0, mu, sigma, u, b, convention))
            biases.append((bias_raw - bias_vec.mean() * u).unsqueeze(0) / sigma.view(-1, 1))
            continue
        weight = _uniform_weight(sources, raw, tower.n_heads)
        heads.append(_fold(raw + weight * bias_raw, mean, group_share * weight, mu, sigma, u, b, convention))
        biases.append(torch.zeros(len(sigma), u.shape[0], device=u.device))
    head_terms = torch.stack(heads, dim=0).sum(0) if sources == "map" else torch.stack(heads, dim=1)
    return head_terms, torch.stack(biases, dim=1)


def _assemble(tower, collector: _Collector, u, b, embedding, convention: str, sources: str) -> Decomposition:
    mu, sigma = collector.mu, collector.sigma
    share = 1.0 / (2 * tower.n_layers + 1)
    embed_term = _fold(*collector.embed, share, mu, sigma, u, b, convention)
    mlps = torch.stack([_fold(*collector.mlps[layer], share, mu, sigma, u, b, convention)
                        for layer in range(1, tower.n_layers + 1)], dim=1)
    heads, biases = _head_terms(tower, collector, convention, sources, u, b, mu, sigma)
    ln_bias = b.expand(len(sigma), -1) if convention == "per_component" else torch.zeros_like(embed_term)
    return Decomposition(embed_term, heads, biases, mlps, ln_bias.clone(), embedding, convention, sources)


def scores_to_maps(scores: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Patch scores (B, P) as soft maps (B, H, W) in [0, 1]: bilinear upsampling, then per-image min-max."""
    rows, cols = grid
    if scores.shape[1] != rows * cols:
        raise InputError(f"{scores.shape[1]} patch scores do not fill a {rows}x{cols} patch grid")
    maps = F.interpolate(scores.float().view(-1, 1, rows, cols), size=size, mode="bilinear", align_corners=False)[:, 0]
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-12), torch.zeros_like(maps))
