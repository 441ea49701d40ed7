"""A transparent forward of CLIP's text and vision towers with named hook sites.

Numbering, used everywhere in the package: a tower is a stack of ``L`` pre-LayerNorm
residual blocks numbered 1..L; block ``l`` reads ``resid[l-1]`` and writes ``resid[l]``,
``resid[0]`` being the embedding output (after ``ln_pre`` in the vision tower). Heads are
numbered 0..H-1 and token positions 0..T-1 (the class token is position 0 of the vision
tower). Data published with 0-based layers is converted where it is read. Arrays with one entry
per block hold block ``l`` at position :func:`layer_index` ``(l) = l - 1``; ``tower.block(l)`` is block
``l``.

Sites (shapes for a batch of B sequences of T tokens, width D, H heads of width d_head):

``resid`` (layer 0..L), ``(B, T, D)``
    the residual stream after the embedding (0) and after each block (l).
``resid_mid`` (1..L), ``(B, T, D)``
    the residual stream between the attention and the MLP of block l.
``v``, ``z`` (1..L), ``(B, T, H, d_head)``
    each head's values, and its attention-weighted values (the head's output before W_O).
``pattern`` (1..L), ``(B, H, T_query, T_key)``
    the softmax attention weights.
``head_out`` (1..L), ``(B, T, H, D)``
    head h's own contribution to the residual stream, ``z_h W_O[:, h]^T`` (the output bias
    ``b_O`` is part of no head).
``head_source_out`` (1..L), ``(B, H, T_source, D)``
    at the pooled query q only (EOT or class token): head h's contribution from source
    token j, ``pattern[h, q, j] * v_{h, j} W_O[:, h]^T``. Summed over sources it is
    ``head_out[q, h]``; summed over heads and sources plus ``b_O``, through the layer scale,
    it is ``attn_out[q]``.
``attn_out`` (1..L), ``(B, T, D)``
    the attention-block output added to the residual stream, ``ls_1(sum_h head_out + b_O)``,
    where ``ls_1`` is the block's layer scale (a learned per-channel factor; the identity in
    blocks without one).
``mlp_out`` (1..L), ``(B, T, D)``
    the MLP output added to the residual stream.
``ln_final_mean``, ``ln_final_scale`` (final: layer L only), ``(B,)``
    the final LayerNorm's statistics of the pooled residual ``r``: ``mean(r)`` and
    ``sqrt(var(r) + eps)``, so that ``ln_final(r) = weight * (r - mean) / scale + bias``.

Within a block the sites are reached in the order ``v, pattern, z, head_source_out,
head_out, attn_out, resid_mid, mlp_out, resid``; a hook on an earlier site changes what the
later ones see. A hook is a callable ``f(value, key) -> value | None`` registered under a
key ``(site, layer)``; ``key`` tells it where it runs, several hooks may share a key (they
run in order), and a returned tensor replaces the value (``None`` keeps it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

BLOCK_SITES = ("resid_mid", "v", "pattern", "z", "head_source_out", "head_out", "attn_out", "mlp_out")
FINAL_SITES = ("ln_final_mean", "ln_final_scale")
SITES = ("resid", *BLOCK_SITES, *FINAL_SITES)
HookKey = tuple[str, int]
Hook = Callable[[torch.Tensor, HookKey], "torch.Tensor | None"]


@dataclass
class Block:
    """The weights of one pre-LayerNorm residual block, backend-neutral."""

    ln_1: nn.Module
    ln_2: nn.Module
    w_qkv: torch.Tensor
    b_qkv: torch.Tensor | None
    w_out: torch.Tensor
    b_out: torch.Tensor | None
    mlp: nn.Module
    ls_1: nn.Module = field(default_factory=nn.Identity)
    ls_2: nn.Module = field(default_factory=nn.Identity)


@dataclass
class FinalNorm:
    """The tower's final LayerNorm: ``weight * (r - mean(r)) / sqrt(var(r) + eps) + bias`` over the width."""

    module: nn.Module
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float

    @classmethod
    def of(cls, module: nn.Module) -> "FinalNorm":
        return cls(module, module.weight, module.bias, float(module.eps))

    def statistics(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean(r)`` and ``sqrt(var(r) + eps)`` of each row of ``pooled`` (B, D), in float32."""
        r = pooled.float()
        mean = r.mean(dim=-1)
        var = r.var(dim=-1, unbiased=False)
        return mean, torch.sqrt(var + self.eps)


class ActivationCache(dict):
    """Activations by ``(site, layer)``; ``stack(site)`` joins all layers of a site on dim 1."""

    def stack(self, site: str) -> torch.Tensor:
        layers = sorted(layer for s, layer in self if s == site)
        if not layers:
            raise KeyError(f"no activations of site {site!r} were cached")
        return torch.stack([self[(site, layer)] for layer in layers], dim=1)


@dataclass
class TowerOutput:
    """``embedding`` (B, E) in the joint space (None when stopped early); ``resid_final`` the last residual computed."""

    embedding: torch.Tensor | None
    cache: ActivationCache
    resid_final: torch.Tensor | None = None


def layer_index(layer: int) -> int:
    """The position of block ``layer`` (1..L) along an axis with one entry per block: ``layer - 1``.

    Such axes are a tower's ``blocks``, stacks of the sites of :data:`BLOCK_SITES` and the per-layer
    terms of a decomposition. A stack of ``resid`` holds layers 0..L and is indexed by the layer itself.
    A layer below 1 is refused, so that it cannot select a block from the end.
    """
    if layer < 1:
        raise ValueError(f"blocks are numbered from 1, got layer {layer}")
    return layer - 1


def site_layers(site: str, n_layers: int) -> range:
    """The layers at which ``site`` exists in a tower of ``n_layers`` blocks."""
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; choose from {SITES}")
    if site == "resid":
        return range(0, n_layers + 1)
    if site in FINAL_SITES:
        return range(n_layers, n_layers + 1)
    return range(1, n_layers + 1)


def _normalise_cache_request(sites, n_layers: int) -> set[HookKey]:
    keys: set[HookKey] = set()
    for item in sites or ():
        if isinstance(item, str):
            keys.update((item, layer) for layer in site_layers(item, n_layers))
        else:
            site, layer = item
            site_layers(site, n_layers)
            keys.add((site, int(layer)))
    return keys


def _normalise_hooks(hooks) -> dict[HookKey, list[Hook]]:
    """Hooks given as ``{key: hook or [hooks]}`` or as ``[(key, hook), ...]``, as lists per key."""
    items = hooks.items() if isinstance(hooks, Mapping) else (hooks or ())
    out: dict[HookKey, list[Hook]] = {}
    for key, value in items:
        key = (key[0], int(key[1]))
        out.setdefault(key, []).extend(value if isinstance(value, (list, tuple)) else [value])
    return out


def patch_positions(values: torch.Tensor, rows: Sequence[int] | torch.Tensor,
                    positions: Sequence[int] | torch.Tensor) -> Hook:
    """A hook that overwrites ``x[rows[i], positions[i]] = values[i]`` and leaves the rest."""
    rows_t = torch.as_tensor(rows, dtype=torch.long)
    pos_t = torch.as_tensor(positions, dtype=torch.long)

    def hook(x: torch.Tensor, key: HookKey | None = None) -> torch.Tensor:
        x = x.clone()
        x[rows_t.to(x.device), pos_t.to(x.device)] = values.to(x.device, x.dtype)
        return x

    return hook


class HookedTower:
    """One transformer tower (text or vision) with hook sites and resumable forward.

    ``embed(inputs)`` gives ``resid[0]``; ``pool_index(inputs)`` the position that is
    pooled (EOT for text, the class token for vision); ``ln_final`` (:class:`FinalNorm`) and
    ``proj`` ((D, E) matrix, or None) map the pooled residual to the joint embedding space,
    ``to_joint_space(r) = ln_final(r) @ proj``. A vision tower also states its patch grid:
    ``patch_size`` (pixels), ``grid_size`` (rows, columns) and ``has_class_token``
    (position 0, before the patches in row-major order).
    """

    def __init__(
        self,
        kind: str,
        blocks: Sequence[Block],
        n_heads: int,
        embed: Callable[[torch.Tensor], torch.Tensor],
        pool_index: Callable[[torch.Tensor], torch.Tensor],
        ln_final: nn.Module,
        proj: nn.Module | torch.Tensor | None,
        causal: bool,
        patch_size: int | None = None,
        grid_size: tuple[int, int] | None = None,
        has_class_token: bool = False,
    ):
        self.kind = kind
        self.blocks = list(blocks)
        self.n_layers = len(self.blocks)
        self.n_heads = n_heads
        self.d_model = self.blocks[0].w_out.shape[0]
        self.d_head = self.d_model // n_heads
        self.embed = embed
        self.pool_index = pool_index
        self.ln_final = FinalNorm.of(ln_final)
        self._proj_module = proj
        self.proj = _projection_matrix(proj)
        self.causal = causal
        self.patch_size = patch_size
        self.grid_size = tuple(grid_size) if grid_size is not None else None
        self.has_class_token = has_class_token

    def block(self, layer: int) -> Block:
        """Block ``layer`` (1..L)."""
        return self.blocks[layer_index(layer)]

    def to_joint_space(self, pooled: torch.Tensor) -> torch.Tensor:
        """The embedding of pooled residuals (..., D): the final LayerNorm, then the projection."""
        x = self.ln_final.module(pooled)
        proj = self._proj_module
        if proj is None:
            return x
        if isinstance(proj, nn.Module):
            return proj(x)
        return x @ proj

    # ------------------------------------------------------------------ attention

    def _mask(self, n_query: int, n_key: int, device, dtype) -> torch.Tensor | None:
        if not self.causal:
            return None
        offset = n_key - n_query
        q = torch.arange(n_query, device=device).unsqueeze(1) + offset
        k = torch.arange(n_key, device=device).unsqueeze(0)
        mask = torch.zeros(n_query, n_key, device=device, dtype=dtype)
        return mask.masked_fill(k > q, float("-inf"))

    def _pooled_mask(self, pool: torch.Tensor, n_prefix: int, n_key: int, device) -> torch.Tensor | None:
        """Keys visible to each row's pooled query, (B, 1, 1, T_key) booleans (None: all)."""
        if not self.causal:
            return None
        keys = torch.arange(n_key, device=device)
        return (keys.unsqueeze(0) <= (pool + n_prefix).unsqueeze(1)).view(len(pool), 1, 1, -1)

    def _qkv(self, block: Block, h: torch.Tensor, query_rows: torch.Tensor | None):
        """Queries, keys and values (B, H, T, d_head); with ``query_rows`` the queries of those positions only."""
        b, t, d = h.shape
        n_h, d_h = self.n_heads, self.d_head
        if query_rows is None:
            qkv = F.linear(h, block.w_qkv, block.b_qkv).view(b, t, 3, n_h, d_h)
            q, k, v = (z.transpose(1, 2) for z in qkv.unbind(dim=2))
            return q, k, v
        bias = block.b_qkv
        kv = F.linear(h, block.w_qkv[d:], None if bias is None else bias[d:]).view(b, t, 2, n_h, d_h)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        rows = torch.arange(b, device=h.device)
        q = F.linear(h[rows, query_rows], block.w_qkv[:d], None if bias is None else bias[:d]).view(b, n_h, 1, d_h)
        return q, k, v

    def _attention(self, block: Block, layer: int, h: torch.Tensor, run: "_Run", prefix_kv=None,
                   query_rows: torch.Tensor | None = None):
        """Multi-head attention of ``block`` on the normalised stream ``h``.

        With ``query_rows`` (B,) only those positions are queried (the pooled-query mode);
        the output then has one position per row.
        """
        b, t, d = h.shape
        n_h, d_h = self.n_heads, self.d_head
        q, k, v = self._qkv(block, h, query_rows)
        if run.touches("v", layer):
            v = run.site("v", layer, v.transpose(1, 2)).transpose(1, 2)
        n_prefix = 0
        if prefix_kv is not None:
            n_prefix = prefix_kv[0].shape[2]
            k = torch.cat([prefix_kv[0], k], dim=2)
            v = torch.cat([prefix_kv[1], v], dim=2)
        if query_rows is None:
            mask = self._mask(t, k.shape[2], h.device, h.dtype)
        else:
            mask = self._pooled_mask(query_rows, n_prefix, k.shape[2], h.device)
        need_pattern = run.touches("pattern", layer) or run.touches("head_source_out", layer)
        pattern = None
        if need_pattern:
            pattern = self._pattern(q, k, mask)
            if run.touches("pattern", layer):
                pattern = run.site("pattern", layer, pattern)
            z = pattern @ v
        else:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if run.touches("z", layer):
            z = run.site("z", layer, z.transpose(1, 2)).transpose(1, 2)
        if run.touches("head_source_out", layer):
            pooled_row = run.pool if query_rows is None else torch.zeros_like(run.pool)
            run.site("head_source_out", layer, self._head_source_out(block, pattern, v, pooled_row))
        t_q = z.shape[2]
        if run.touches("head_out", layer):
            w_heads = block.w_out.view(d, n_h, d_h)
            head_out = run.site("head_out", layer, torch.einsum("bhtk,dhk->bthd", z, w_heads))
            out = head_out.sum(dim=2)
            if block.b_out is not None:
                out = out + block.b_out
            return out
        return F.linear(z.transpose(1, 2).reshape(b, t_q, d), block.w_out, block.b_out)

    def _pattern(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        scores = (q @ k.transpose(-1, -2)) * (self.d_head**-0.5)
        if mask is not None:
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, float("-inf"))
            else:
                scores = scores + mask
        return scores.softmax(dim=-1)

    def _head_source_out(self, block: Block, pattern: torch.Tensor, v: torch.Tensor,
                         query: torch.Tensor) -> torch.Tensor:
        """``pattern[h, q, j] * v_{h, j} W_O[:, h]^T`` at query position ``query`` (B,), shape (B, H, T_source, D).

        Built from the pooled query's pattern row alone, never the (B, T_query, T_source, H, D) tensor.
        """
        rows = torch.arange(pattern.shape[0], device=pattern.device)
        weights = pattern[rows, :, query]
        w_heads = block.w_out.view(self.d_model, self.n_heads, self.d_head)
        return torch.einsum("bhj,bhjk,dhk->bhjd", weights, v, w_heads)

    # ------------------------------------------------------------------ forward

    def _block(self, block: Block, layer: int, x: torch.Tensor, run: "_Run", prefix_kv=None,
               query_rows: torch.Tensor | None = None, from_mid: bool = False) -> torch.Tensor:
        """``resid[layer-1]`` -> ``resid[layer]`` (from ``resid_mid[layer]`` with ``from_mid``)."""
        if not from_mid:
            attn = self._attention(block, layer, block.ln_1(x), run, prefix_kv, query_rows)
            attn = run.site("attn_out", layer, block.ls_1(attn))
            if query_rows is not None:
                x = x[torch.arange(x.shape[0], device=x.device), query_rows].unsqueeze(1)
            x = x + attn
            x = run.site("resid_mid", layer, x)
        mlp = run.site("mlp_out", layer, block.ls_2(block.mlp(block.ln_2(x))))
        return run.site("resid", layer, x + mlp)

    def run(
        self,
        inputs: torch.Tensor | None = None,
        *,
        hooks: Mapping[HookKey, Hook | Sequence[Hook]] | Iterable[tuple[HookKey, Hook]] | None = None,
        cache: Iterable | None = None,
        start_layer: int = 0,
        start_resid: torch.Tensor | None = None,
        start_at: str = "resid",
        pool_index: torch.Tensor | None = None,
        prefix_kv: Mapping[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
        stop_layer: int | None = None,
        pooled_query_only: bool = False,
    ) -> TowerOutput:
        """Forward the tower, applying ``hooks`` and caching the requested sites.

        ``start_resid`` (with ``start_layer`` = l) resumes from ``resid[l]`` and runs blocks
        l+1..L; ``resid[l]`` hooks still apply to it. With ``start_at="resid_mid"`` it resumes
        from ``resid_mid[l]`` instead: block l's MLP, then blocks l+1..L. With ``prefix_kv``
        (only for causal towers) ``start_resid`` holds only the later positions of the
        sequence and ``prefix_kv[layer]`` the keys and values of the earlier positions at that
        block, which changes to later positions cannot affect. ``stop_layer`` ends after that
        block and returns no embedding. ``pooled_query_only`` computes the last block only at
        the pooled position (keys and values still from every position): its sites and
        ``resid_final`` then have one position, and the embedding is unchanged.
        """
        if prefix_kv is not None and not self.causal:
            raise ValueError("prefix_kv needs a causal tower")
        if start_at not in ("resid", "resid_mid"):
            raise ValueError(f"start_at must be 'resid' or 'resid_mid', not {start_at!r}")
        x, pool = self._start(inputs, start_layer, start_resid, pool_index)
        run = _Run(_normalise_hooks(hooks), _normalise_cache_request(cache, self.n_layers), pool)
        run.check(self.n_layers)
        first = start_layer + 1
        if start_at == "resid_mid":
            x = run.site("resid_mid", start_layer, x)
            x = self._block(self.block(start_layer), start_layer, x, run, from_mid=True)
        else:
            x = run.site("resid", start_layer, x)
        last = self.n_layers if stop_layer is None else stop_layer
        for layer in range(first, last + 1):
            kv = prefix_kv.get(layer) if prefix_kv is not None else None
            pooled_only = pooled_query_only and layer == self.n_layers
            x = self._block(self.block(layer), layer, x, run, kv, pool if pooled_only else None)
        if stop_layer is not None:
            return TowerOutput(embedding=None, cache=run.cache, resid_final=x)
        pooled = (x[:, 0] if x.shape[1] == 1 and pooled_query_only
                  else x[torch.arange(x.shape[0], device=x.device), pool])
        self._final_sites(pooled, run)
        return TowerOutput(embedding=self.to_joint_space(pooled), cache=run.cache, resid_final=x)

    def _start(self, inputs, start_layer, start_resid, pool_index):
        """The residual to start from and the pooled positions (B,)."""
        if start_resid is None:
            if inputs is None:
                raise ValueError("give inputs or start_resid")
            if start_layer != 0:
                raise ValueError("start_layer > 0 needs start_resid")
            x = self.embed(inputs)
        else:
            x = start_resid
            if pool_index is None and inputs is None:
                raise ValueError("resuming needs pool_index or inputs")
        if pool_index is None:
            pool_index = self.pool_index(inputs)
        return x, pool_index.to(x.device)

    def _final_sites(self, pooled: torch.Tensor, run: "_Run") -> None:
        if run.touches("ln_final_mean", self.n_layers) or run.touches("ln_final_scale", self.n_layers):
            mean, scale = self.ln_final.statistics(pooled)
            run.site("ln_final_mean", self.n_layers, mean)
            run.site("ln_final_scale", self.n_layers, scale)

    def keys_values(self, resid: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, T, d_head) that block ``layer`` computes from ``resid[layer-1]``."""
        block = self.block(layer)
        b, t, _ = resid.shape
        qkv = F.linear(block.ln_1(resid), block.w_qkv, block.b_qkv).view(b, t, 3, self.n_heads, self.d_head)
        return qkv[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)


class _Run:
    """The hooks, cache requests and pooled positions of one forward."""

    def __init__(self, hooks: dict[HookKey, list[Hook]], wanted: set[HookKey], pool: torch.Tensor):
        self.hooks = hooks
        self.wanted = wanted
        self.pool = pool
        self.cache = ActivationCache()

    def check(self, n_layers: int) -> None:
        for site, layer in list(self.hooks) + list(self.wanted):
            if site not in SITES or layer not in site_layers(site, n_layers):
                raise ValueError(f"no hook site ({site!r}, {layer}) in a tower of {n_layers} layers")

    def touches(self, site: str, layer: int) -> bool:
        return (site, layer) in self.hooks or (site, layer) in self.wanted

    def site(self, site: str, layer: int, value: torch.Tensor) -> torch.Tensor:
        key = (site, layer)
        for hook in self.hooks.get(key, ()):
            out = hook(value, key)
            if out is not None:
                value = out
        if key in self.wanted:
            self.cache[key] = value.detach()
        return value


def _projection_matrix(proj) -> torch.Tensor | None:
    """The projection as a (D, E) matrix: open_clip stores one, Hugging Face an ``nn.Linear`` (E, D)."""
    if proj is None:
        return None
    if isinstance(proj, nn.Linear):
        if proj.bias is not None:
            raise ValueError("a projection with a bias is not a linear map to the joint space")
        return proj.weight.T
    return proj


class HookedCLIP:
    """A CLIP model seen through :class:`HookedTower` s, with its tokenizer and preprocessing.

    ``similarity(image_embedding, text_embedding)`` is CLIP's logit,
    ``logit_scale * cos(image, text)`` (row by row).
    """

    def __init__(self, text: HookedTower, vision: HookedTower, logit_scale: float, tokenizer, preprocess,
                 image_size: int, source_model: nn.Module, spec: Mapping, device: torch.device):
        self.text = text
        self.vision = vision
        self.logit_scale = float(logit_scale)
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.image_size = image_size
        self.source_model = source_model
        self.spec = dict(spec)
        self.device = device

    def encode_text(self, token_ids: torch.Tensor, **kwargs) -> TowerOutput:
        return self.text.run(token_ids.to(self.device), **kwargs)

    def encode_image(self, pixels: torch.Tensor, **kwargs) -> TowerOutput:
        return self.vision.run(pixels.to(self.device), **kwargs)

    def similarity(self, image_embedding: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        """``logit_scale * cosine`` of matching rows (broadcasting over leading dims)."""
        return self.logit_scale * F.cosine_similarity(image_embedding, text_embedding, dim=-1)

    def similarity_matrix(self, image_embedding: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        """``logit_scale * cosine`` of every image with every text, shape (images, texts)."""
        return self.logit_scale * F.normalize(image_embedding, dim=-1) @ F.normalize(text_embedding, dim=-1).T
