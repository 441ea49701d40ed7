"""A transparent forward of CLIP's text and vision towers with named hook sites.

Each tower is a stack of ``L`` pre-LayerNorm residual blocks. Sites (layers are
1-based for blocks, so that block ``l`` reads ``resid[l-1]`` and writes ``resid[l]``):

``resid`` (layer 0..L)
    the residual stream after the embedding (0) and after each block (l).
``resid_mid`` (1..L)
    the residual stream between the attention and the MLP of block l.
``attn_out`` (1..L)
    the attention-block output added to the residual stream, ``sum_h head_out + b_O``.
``head_out`` (1..L), shape ``(B, T, H, D)``
    head h's own contribution: its slice of the output projection applied to its
    attention-weighted values, ``z_h W_O[:, h]^T`` (the bias is not part of any head).
``pattern`` (1..L), shape ``(B, H, T_query, T_key)``
    the softmax attention weights.
``mlp_out`` (1..L)
    the MLP output added to the residual stream.

A hook is a callable ``f(value) -> value`` registered under ``(site, layer)``; it may
return a modified tensor, which the forward then uses. The forward can also resume
from a stored residual at any layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

SITES = ("resid", "resid_mid", "attn_out", "head_out", "pattern", "mlp_out")
Hook = Callable[[torch.Tensor], torch.Tensor]
HookKey = tuple[str, int]


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


class ActivationCache(dict):
    """Activations by ``(site, layer)``; ``stack(site)`` joins all layers of a site on dim 1."""

    def stack(self, site: str) -> torch.Tensor:
        layers = sorted(layer for s, layer in self if s == site)
        if not layers:
            raise KeyError(f"no activations of site {site!r} were cached")
        return torch.stack([self[(site, layer)] for layer in layers], dim=1)


@dataclass
class TowerOutput:
    embedding: torch.Tensor
    cache: ActivationCache
    resid_final: torch.Tensor | None = None


def _normalise_cache_request(sites, n_layers: int) -> set[HookKey]:
    if not sites:
        return set()
    keys: set[HookKey] = set()
    for item in sites:
        if isinstance(item, str):
            if item not in SITES:
                raise ValueError(f"unknown site {item!r}; choose from {SITES}")
            first = 0 if item == "resid" else 1
            keys.update((item, layer) for layer in range(first, n_layers + 1))
        else:
            site, layer = item
            if site not in SITES:
                raise ValueError(f"unknown site {site!r}; choose from {SITES}")
            keys.add((site, int(layer)))
    return keys


def patch_positions(values: torch.Tensor, rows: Sequence[int] | torch.Tensor, positions: Sequence[int] | torch.Tensor) -> Hook:
    """A hook that overwrites ``x[rows[i], positions[i]] = values[i]`` and leaves the rest."""
    rows_t = torch.as_tensor(rows, dtype=torch.long)
    pos_t = torch.as_tensor(positions, dtype=torch.long)

    def hook(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[rows_t.to(x.device), pos_t.to(x.device)] = values.to(x.device, x.dtype)
        return x

    return hook


class HookedTower:
    """One transformer tower (text or vision) with hook sites and resumable forward.

    ``embed(inputs)`` gives ``resid[0]``; ``pool_index(inputs)`` the position that is
    pooled (EOT for text, the class token for vision); ``head(pooled)`` maps the pooled
    residual to the joint embedding space (final LayerNorm and projection).
    """

    def __init__(
        self,
        kind: str,
        blocks: Sequence[Block],
        n_heads: int,
        embed: Callable[[torch.Tensor], torch.Tensor],
        pool_index: Callable[[torch.Tensor], torch.Tensor],
        head: Callable[[torch.Tensor], torch.Tensor],
        causal: bool,
    ):
        self.kind = kind
        self.blocks = list(blocks)
        self.n_layers = len(self.blocks)
        self.n_heads = n_heads
        self.d_model = self.blocks[0].w_out.shape[0]
        self.d_head = self.d_model // n_heads
        self.embed = embed
        self.pool_index = pool_index
        self.head = head
        self.causal = causal

    def _mask(self, n_query: int, n_key: int, device, dtype) -> torch.Tensor | None:
        if not self.causal:
            return None
        offset = n_key - n_query
        q = torch.arange(n_query, device=device).unsqueeze(1) + offset
        k = torch.arange(n_key, device=device).unsqueeze(0)
        mask = torch.zeros(n_query, n_key, device=device, dtype=dtype)
        return mask.masked_fill(k > q, float("-inf"))

    def _attention(self, block: Block, layer: int, h: torch.Tensor, hooks, wanted, cache, prefix_kv=None):
        """Multi-head attention of ``block`` on the normalised stream ``h``."""
        b, t, d = h.shape
        n_h, d_h = self.n_heads, self.d_head
        qkv = F.linear(h, block.w_qkv, block.b_qkv).view(b, t, 3, n_h, d_h)
        q, k, v = qkv.unbind(dim=2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        if prefix_kv is not None:
            k = torch.cat([prefix_kv[0], k], dim=2)
            v = torch.cat([prefix_kv[1], v], dim=2)
        need_pattern = ("pattern", layer) in hooks or ("pattern", layer) in wanted
        need_heads = ("head_out", layer) in hooks or ("head_out", layer) in wanted
        mask = self._mask(t, k.shape[2], h.device, h.dtype)
        if need_pattern:
            scores = (q @ k.transpose(-1, -2)) * (d_h**-0.5)
            if mask is not None:
                scores = scores + mask
            pattern = scores.softmax(dim=-1)
            pattern = self._site(hooks, wanted, cache, "pattern", layer, pattern)
            z = pattern @ v
        else:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if need_heads:
            w_heads = block.w_out.view(d, n_h, d_h)
            head_out = torch.einsum("bhtk,dhk->bthd", z, w_heads)
            head_out = self._site(hooks, wanted, cache, "head_out", layer, head_out)
            out = head_out.sum(dim=2)
            if block.b_out is not None:
                out = out + block.b_out
        else:
            out = F.linear(z.transpose(1, 2).reshape(b, t, d), block.w_out, block.b_out)
        return out

    @staticmethod
    def _site(hooks, wanted, cache, site, layer, value):
        hook = hooks.get((site, layer))
        if hook is not None:
            value = hook(value)
        if (site, layer) in wanted:
            cache[(site, layer)] = value.detach()
        return value

    def run(
        self,
        inputs: torch.Tensor | None = None,
        *,
        hooks: Mapping[HookKey, Hook] | None = None,
        cache: Iterable | None = None,
        start_layer: int = 0,
        start_resid: torch.Tensor | None = None,
        pool_index: torch.Tensor | None = None,
        prefix_kv: Mapping[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
        stop_layer: int | None = None,
    ) -> TowerOutput:
        """Forward the tower, applying ``hooks`` and caching the requested sites.

        ``start_resid`` (with ``start_layer`` = l) resumes from ``resid[l]`` and runs
        blocks l+1..L; ``resid[l]`` hooks still apply to it. With ``prefix_kv`` (only for
        causal towers) ``start_resid`` holds only the later positions of the sequence and
        ``prefix_kv[layer]`` the keys and values of the earlier positions at that block,
        which are unaffected by changes to later positions. ``stop_layer`` ends after
        that block and returns no embedding.
        """
        hooks = dict(hooks or {})
        wanted = _normalise_cache_request(cache, self.n_layers)
        for site, layer in list(hooks) + list(wanted):
            low = 0 if site == "resid" else 1
            if site not in SITES or not low <= layer <= self.n_layers:
                raise ValueError(f"no hook site ({site!r}, {layer}) in a tower of {self.n_layers} layers")
        if prefix_kv is not None and not self.causal:
            raise ValueError("prefix_kv needs a causal tower")
        acts = ActivationCache()
        if start_resid is None:
            if inputs is None:
                raise ValueError("give inputs or start_resid")
            if start_layer != 0:
                raise ValueError("start_layer > 0 needs start_resid")
            x = self.embed(inputs)
            if pool_index is None:
                pool_index = self.pool_index(inputs)
        else:
            x = start_resid
            if pool_index is None:
                if inputs is None:
                    raise ValueError("resuming needs pool_index or inputs")
                pool_index = self.pool_index(inputs)
        x = self._site(hooks, wanted, acts, "resid", start_layer, x)
        last = self.n_layers if stop_layer is None else stop_layer
        for layer in range(start_layer + 1, last + 1):
            block = self.blocks[layer - 1]
            kv = prefix_kv.get(layer) if prefix_kv is not None else None
            attn = self._attention(block, layer, block.ln_1(x), hooks, wanted, acts, kv)
            attn = self._site(hooks, wanted, acts, "attn_out", layer, block.ls_1(attn))
            x = x + attn
            x = self._site(hooks, wanted, acts, "resid_mid", layer, x)
            mlp = self._site(hooks, wanted, acts, "mlp_out", layer, block.ls_2(block.mlp(block.ln_2(x))))
            x = x + mlp
            x = self._site(hooks, wanted, acts, "resid", layer, x)
        if stop_layer is not None and stop_layer < self.n_layers:
            return TowerOutput(embedding=None, cache=acts, resid_final=x)
        rows = torch.arange(x.shape[0], device=x.device)
        pooled = x[rows, pool_index.to(x.device)]
        return TowerOutput(embedding=self.head(pooled), cache=acts, resid_final=x)

    def keys_values(self, resid: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, T, d_head) that block ``layer`` computes from ``resid[layer-1]``."""
        block = self.blocks[layer - 1]
        b, t, _ = resid.shape
        qkv = F.linear(block.ln_1(resid), block.w_qkv, block.b_qkv).view(b, t, 3, self.n_heads, self.d_head)
        return qkv[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)


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
