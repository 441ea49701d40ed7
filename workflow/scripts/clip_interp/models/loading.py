"""Loading CLIP models from open_clip or Hugging Face ``transformers`` as :class:`HookedCLIP`.

A model is a config entry ``{backend, name, pretrained | path}``:

- ``backend: open_clip`` — ``name`` is an open_clip architecture (``ViT-B-32``), ``pretrained``
  a release tag (``openai``, ``laion2b_s34b_b79k``) or ``path`` a local checkpoint file;
  ``config`` optionally points to a model-config JSON for architectures open_clip does not
  ship (it is registered under its file stem, which must equal ``name``).
- ``backend: hf`` — ``name`` a hub id (``openai/clip-vit-base-patch32``) or ``path`` a local
  directory saved with ``save_pretrained``.
- ``random_init: true`` builds the architecture with random weights (tests, benchmarks),
  drawn from the seed ``seed`` (default 0) so that every rule loading the entry gets the same
  weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..errors import InputError
from ..tokenizers import default_tokenizer, from_hf, from_open_clip
from .hooked import Block, HookedCLIP, HookedTower


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(spec: Mapping, device: str | torch.device | None = "auto") -> HookedCLIP:
    """Load the model described by config entry ``spec`` and wrap it for hooking."""
    backend = spec.get("backend")
    dev = resolve_device(device)
    loaders = {"open_clip": _load_open_clip, "hf": _load_hf, "transformers": _load_hf}
    if backend not in loaders:
        raise InputError(f"model {model_label(spec)}: unknown backend {backend!r}; use 'open_clip' or 'hf'")
    if not spec.get("random_init"):
        return loaders[backend](spec, dev)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec.get("seed", 0)))
        return loaders[backend](spec, dev)


def _class_token(pixels: torch.Tensor) -> torch.Tensor:
    """The pooled position of a vision tower: the class token, position 0 of every row."""
    return torch.zeros(pixels.shape[0], dtype=torch.long, device=pixels.device)


def model_label(spec: Mapping) -> str:
    """How errors name a model entry: its ``name``, else its ``path``."""
    return repr(spec.get("name") or spec.get("path"))


def _check_local(spec: Mapping, key: str) -> str | None:
    value = spec.get(key)
    if value is None:
        return None
    if not Path(value).exists():
        raise InputError(
            f"model {model_label(spec)}: {key} {value!r} does not exist; fix the path in the "
            "config's `models` entry or remove it to download the weights"
        )
    return str(value)


def _blocks_from_open_clip(resblocks) -> list[Block]:
    blocks = []
    for i, rb in enumerate(resblocks):
        attn = getattr(rb, "attn", None)
        if not isinstance(attn, nn.MultiheadAttention) or hasattr(rb, "ln_attn"):
            raise InputError(
                f"open_clip block {i} is a {type(rb).__name__} with {type(attn).__name__} attention; "
                "only standard ResidualAttentionBlocks with nn.MultiheadAttention are supported"
            )
        blocks.append(Block(
            ln_1=rb.ln_1, ln_2=rb.ln_2, w_qkv=attn.in_proj_weight, b_qkv=attn.in_proj_bias,
            w_out=attn.out_proj.weight, b_out=attn.out_proj.bias, mlp=rb.mlp, ls_1=rb.ls_1, ls_2=rb.ls_2,
        ))
    return blocks


def hook_open_clip(model, tokenizer, preprocess, spec: Mapping, device: torch.device) -> HookedCLIP:
    """Wrap an open_clip ``CLIP`` (or ``CustomTextCLIP`` with an open_clip text tower)."""
    text_tower = getattr(model, "text", model)
    for attr in ("token_embedding", "positional_embedding", "transformer", "ln_final"):
        if not hasattr(text_tower, attr):
            raise InputError(f"open_clip model {model_label(spec)} has no standard text transformer ({attr} missing)")
    if getattr(text_tower, "cls_emb", None) is not None:
        raise InputError(f"open_clip model {model_label(spec)}: text towers with a class token (CoCa) are unsupported")
    pool_type = getattr(text_tower, "text_pool_type", None) or getattr(text_tower, "pool_type", "argmax")
    eos_id = getattr(text_tower, "text_eos_id", None) or getattr(text_tower, "eos_id", None)

    def text_embed(ids):
        return text_tower.token_embedding(ids) + text_tower.positional_embedding[: ids.shape[1]]

    def text_pool(ids):
        if pool_type == "argmax":
            return ids.argmax(dim=-1)
        if pool_type == "eos":
            return (ids == eos_id).int().argmax(dim=-1)
        raise InputError(f"open_clip text pool type {pool_type!r} is unsupported")

    text = HookedTower(
        "text", _blocks_from_open_clip(text_tower.transformer.resblocks),
        text_tower.transformer.resblocks[0].attn.num_heads,
        embed=text_embed, pool_index=text_pool, ln_final=text_tower.ln_final, proj=text_tower.text_projection,
        causal=getattr(text_tower, "attn_mask", None) is not None,
    )

    visual = model.visual
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        raise InputError(f"open_clip model {model_label(spec)}: only class-token pooling vision towers are supported")
    if not hasattr(visual, "conv1"):
        raise InputError(f"open_clip model {model_label(spec)}: the vision tower is not a ViT "
                         f"({type(visual).__name__})")

    def vision_embed(pixels):
        x = visual.conv1(pixels.to(visual.conv1.weight.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        return visual.ln_pre(x)

    patch = visual.patch_size[0] if isinstance(visual.patch_size, (tuple, list)) else visual.patch_size
    vision = HookedTower(
        "vision", _blocks_from_open_clip(visual.transformer.resblocks), visual.transformer.resblocks[0].attn.num_heads,
        embed=vision_embed, pool_index=_class_token, ln_final=visual.ln_post, proj=visual.proj, causal=False,
        patch_size=int(patch), grid_size=tuple(int(g) for g in visual.grid_size), has_class_token=True,
    )
    image_size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    return HookedCLIP(text, vision, model.logit_scale.exp().item(), tokenizer, preprocess, image_size, model, spec,
                      device)


def _load_open_clip(spec: Mapping, device: torch.device) -> HookedCLIP:
    import open_clip

    name = spec.get("name")
    if not name:
        raise InputError("an open_clip model entry needs `name` (an architecture such as ViT-B-32)")
    config = _check_local(spec, "config")
    if config:
        if Path(config).stem != name:
            raise InputError(f"model config {config!r} registers architecture {Path(config).stem!r}, not {name!r}")
        open_clip.add_model_config(config)
    if name not in open_clip.list_models():
        raise InputError(f"open_clip has no architecture {name!r}; give `config` or one of open_clip.list_models()")
    path = _check_local(spec, "path")
    pretrained = None if spec.get("random_init") else (path or spec.get("pretrained"))
    if not spec.get("random_init") and pretrained is None:
        raise InputError(f"model {name!r}: give `pretrained` (a release tag), `path` (a checkpoint) "
                         "or `random_init: true`")
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    model.eval()
    tokenizer = from_open_clip(open_clip.get_tokenizer(name))
    return hook_open_clip(model, tokenizer, preprocess, spec, device)


def _blocks_from_hf(layers) -> list[Block]:
    blocks = []
    for layer in layers:
        att = layer.self_attn
        w_qkv = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight], dim=0)
        b_qkv = torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias], dim=0)
        blocks.append(Block(
            ln_1=layer.layer_norm1, ln_2=layer.layer_norm2, w_qkv=w_qkv, b_qkv=b_qkv,
            w_out=att.out_proj.weight, b_out=att.out_proj.bias, mlp=layer.mlp,
        ))
    return blocks


def hook_hf(model, tokenizer, preprocess, spec: Mapping, device: torch.device) -> HookedCLIP:
    """Wrap a Hugging Face ``CLIPModel``."""
    tm, vm = model.text_model, model.vision_model
    eos_id = tm.eos_token_id

    def text_pool(ids):
        if eos_id == 2:
            return ids.argmax(dim=-1)
        return (ids == eos_id).int().argmax(dim=-1)

    text = HookedTower(
        "text", _blocks_from_hf(tm.encoder.layers), model.config.text_config.num_attention_heads,
        embed=lambda ids: tm.embeddings(input_ids=ids), pool_index=text_pool,
        ln_final=tm.final_layer_norm, proj=model.text_projection, causal=True,
    )
    vision_config = model.config.vision_config
    grid = vision_config.image_size // vision_config.patch_size
    vision = HookedTower(
        "vision", _blocks_from_hf(vm.encoder.layers), vision_config.num_attention_heads,
        embed=lambda px: vm.pre_layrnorm(vm.embeddings(px)), pool_index=_class_token,
        ln_final=vm.post_layernorm, proj=model.visual_projection, causal=False,
        patch_size=vision_config.patch_size, grid_size=(grid, grid), has_class_token=True,
    )
    return HookedCLIP(text, vision, model.logit_scale.exp().item(), tokenizer, preprocess,
                      model.config.vision_config.image_size, model, spec, device)


def _hf_preprocess(processor):
    def preprocess(image):
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    return preprocess


def _load_hf(spec: Mapping, device: torch.device) -> HookedCLIP:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    source = _check_local(spec, "path") or spec.get("name")
    if spec.get("random_init"):
        config = CLIPConfig.from_pretrained(source) if spec.get("path") else CLIPConfig()
        model = CLIPModel(config)
        processor = CLIPImageProcessor(size={"shortest_edge": config.vision_config.image_size},
                                       crop_size={"height": config.vision_config.image_size,
                                                  "width": config.vision_config.image_size})
        tokenizer = default_tokenizer()
    else:
        if not source:
            raise InputError("a hf model entry needs `name` (a hub id) or `path` (a local directory)")
        model = CLIPModel.from_pretrained(source)
        processor = CLIPImageProcessor.from_pretrained(source)
        tokenizer = from_hf(CLIPTokenizerFast.from_pretrained(source), model.config.text_config.max_position_embeddings)
    model.to(device).eval()
    return hook_hf(model, tokenizer, _hf_preprocess(processor), spec, device)


def load_tokenizer(spec: Mapping):
    """Only the tokenizer of model entry ``spec`` (no weights are loaded)."""
    backend = spec.get("backend")
    if backend == "open_clip":
        import open_clip

        config = _check_local(spec, "config")
        if config:
            open_clip.add_model_config(config)
        return from_open_clip(open_clip.get_tokenizer(spec["name"]))
    if backend in ("hf", "transformers"):
        if spec.get("random_init"):
            return default_tokenizer()
        from transformers import CLIPTokenizerFast

        return from_hf(CLIPTokenizerFast.from_pretrained(_check_local(spec, "path") or spec["name"]))
    raise InputError(f"model {model_label(spec)}: unknown backend {backend!r}; use 'open_clip' or 'hf'")
