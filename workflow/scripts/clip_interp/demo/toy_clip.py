"""A tiny CLIP of open_clip's own architecture, trained on CPU on the synthetic benchmark.

The model is ``open_clip.model.CLIP`` built from an open_clip model config: a ViT image
tower and a causal text transformer of standard ``ResidualAttentionBlock`` s (with
``nn.MultiheadAttention``), the real 49,408-token CLIP BPE vocabulary, context length 77,
and argmax (end-of-text) text pooling, so open_clip's tokenizer, hooks and loading code
apply unchanged. Images are preprocessed with open_clip's default (OpenAI mean/std)
evaluation transform at the model's image size, in training and evaluation alike.

Training minimises, per batch of images with all their (caption, foil) pairs,

    L = c · (CE(S, I) + CE(Sᵀ, I)) / 2 + w · H

where ``S[r, q] = s · cos(v_r, t_q)`` are the logits between the image of pair ``r`` and
the caption of pair ``q`` with logit scale ``s`` (learned, capped at 100), ``CE(·, I)``
is the cross-entropy against the diagonal (the symmetric InfoNCE loss), and ``c``/``w``
are the InfoNCE and hard-negative weights. An off-diagonal (r, q) whose caption q is
*true* of image r (known from the objects each training image holds, e.g. "There is no
blue square." for most images) is left out of both softmaxes instead of being treated as
a negative. ``H`` is the hard-negative term: the logistic loss
``softplus(s · (cos(v, t_false) − cos(v, t_true)))`` of preferring the true sentence of
each (affirmative, negated) pair of the training set over its negation-flipped twin,
for every image of the batch and every such pair (see :func:`_dense_hard_loss`).

Two measures make the towers learn in a few CPU minutes: a short text warm-up that
spreads the sentence embeddings apart (:func:`_spread_text`), and a text-tower learning
rate of ``text_lr_scale`` times the image tower's. Without them the text tower settles
on colour words early and the image tower never learns shapes (held-out accuracy stays
near 0.7, the score of a colour-only model).

Held-out accuracy is the share of benchmark instances whose caption logit exceeds its
foil logit, computed through the standard ``encode_image``/``encode_text`` path.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..images import load_images
from ..io import atomic_path, write_json

MODEL_NAME = "ToyCLIP"
CONFIG_FILE = f"{MODEL_NAME}.json"
CHECKPOINT_FILE = "toy_clip.pt"
METRICS_FILE = "training_metrics.json"

CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
MAX_LOGIT_SCALE = 100.0

DEFAULT_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 96, "layers": 3, "head_width": 24},
    "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": VOCAB_SIZE, "width": 64, "heads": 4,
                 "layers": 2},
}
DEFAULT_EPOCHS = 4
DEFAULT_BATCH_SIZE = 32
DEFAULT_LR = 1e-3
DEFAULT_WEIGHT_DECAY = 0.1
DEFAULT_WARMUP_FRACTION = 0.05
DEFAULT_HARD_NEGATIVE_WEIGHT = 1.0
DEFAULT_CLIP_WEIGHT = 1.0
DEFAULT_TEXT_WARMUP_STEPS = 100
DEFAULT_TEXT_LR_SCALE = 0.1


def toy_clip_config(**overrides: Any) -> dict[str, Any]:
    """The toy model's open_clip config, with ``overrides`` applied.

    Top-level keys replace the defaults; ``vision_cfg``/``text_cfg`` dicts are merged
    into the default tower configs key by key. The text tower must keep the CLIP BPE
    vocabulary size (49408) and context length (77).
    """
    import open_clip

    allowed = {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg", "init_logit_scale"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise InputError(f"unknown toy CLIP config keys {unknown}; use only {sorted(allowed)}")
    config = copy.deepcopy(DEFAULT_CONFIG)
    for key, value in overrides.items():
        if key in ("vision_cfg", "text_cfg"):
            if not isinstance(value, dict):
                raise InputError(f"toy CLIP {key}={value!r} must be a dict of {key} fields")
            fields = {f.name for f in dataclasses.fields(
                open_clip.CLIPVisionCfg if key == "vision_cfg" else open_clip.CLIPTextCfg)}
            bad = sorted(set(value) - fields)
            if bad:
                raise InputError(f"unknown {key} keys {bad} for the toy CLIP; open_clip accepts {sorted(fields)}")
            config[key].update(value)
        else:
            config[key] = value
    text = config["text_cfg"]
    if text.get("vocab_size") != VOCAB_SIZE or text.get("context_length") != CONTEXT_LENGTH:
        raise InputError(
            f"toy CLIP text_cfg has vocab_size={text.get('vocab_size')} and context_length="
            f"{text.get('context_length')}; keep {VOCAB_SIZE} and {CONTEXT_LENGTH} so the CLIP BPE "
            "tokenizer applies"
        )
    return config


def evaluation_transform(config: dict[str, Any]):
    """open_clip's evaluation transform with its default preprocessing at the model's image size."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    image_size = config["vision_cfg"]["image_size"]
    size = tuple(image_size) if isinstance(image_size, (list, tuple)) else (image_size, image_size)
    return image_transform_v2(PreprocessCfg(size=size), is_train=False)


def _tokenizer():
    import open_clip

    return open_clip.SimpleTokenizer(context_length=CONTEXT_LENGTH)


def _read_train(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise InputError(
            f"training pairs {path} not found; create them with "
            "clip_interp.demo.negation_benchmark.generate_existence_benchmark(benchmark_dir, ...)"
        )
    records = []
    required = ("image_file", "caption", "foil", "subject", "caption_negated", "objects")
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path} line {number} is not JSON ({exc}); regenerate the benchmark") from exc
            missing = [k for k in required if k not in record]
            if missing:
                raise InputError(
                    f"{path} line {number} lacks keys {missing}; each training pair needs {list(required)} "
                    "(as written by clip_interp.demo.negation_benchmark)"
                )
            records.append(record)
    if len(records) < 2:
        raise InputError(f"{path} holds {len(records)} training pairs; generate at least 2 training images")
    return records


def _read_eval(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    if not path.exists():
        raise InputError(f"benchmark {path} not found; create it with "
                         "clip_interp.demo.negation_benchmark.generate_existence_benchmark")
    with open(path) as handle:
        entries = json.load(handle)
    keys = sorted(entries)
    missing = [k for k in keys if not {"caption", "foil", "image_file"} <= set(entries[k])]
    if missing:
        raise InputError(f"{path}: entries {missing[:3]} lack caption, foil or image_file; regenerate the benchmark")
    return keys, [entries[key] for key in keys]


def _insert_some(text: str) -> str:
    """The workflow's rephrasing of a plural affirmative: "There are X." -> "There are some X."."""
    prefix = "There are "
    if text.startswith(prefix) and not text.startswith(prefix + "no ") and not text.startswith(prefix + "some "):
        return prefix + "some " + text[len(prefix):]
    return text


def _encode_short_text(model, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` on tokens cut to their longest sequence (the causal mask makes the
    end-of-text features independent of the padding after it)."""
    length = tokens.shape[1]
    x = model.token_embedding(tokens) + model.positional_embedding[:length]
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
    return x @ model.text_projection


@torch.no_grad()
def caption_foil_logits(model, images: torch.Tensor, captions: torch.Tensor, foils: torch.Tensor,
                        batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per instance, ``s · cos(image, caption)`` and ``s · cos(image, foil)`` via
    ``encode_image``/``encode_text`` (full-context tokens)."""
    scale = model.logit_scale.exp()
    cap_out, foil_out = [], []
    for start in range(0, images.shape[0], batch_size):
        stop = start + batch_size
        v = model.encode_image(images[start:stop], normalize=True)
        tc = model.encode_text(captions[start:stop], normalize=True)
        tf = model.encode_text(foils[start:stop], normalize=True)
        cap_out.append(scale * (v * tc).sum(-1))
        foil_out.append(scale * (v * tf).sum(-1))
    return torch.cat(cap_out), torch.cat(foil_out)


class _DeterministicCPU:
    """Set thread count and deterministic algorithms for the block; restore them after."""

    def __init__(self, threads: int):
        self.threads = threads

    def __enter__(self):
        self.saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(True)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved[0])
        torch.use_deterministic_algorithms(self.saved[1])
        return False


def _dense_hard_loss(model, vision, scale, tokens, counts, pair_aff, pair_neg, pair_combo, pair_plural, related):
    """Hard-negative term over every (affirmative, negated) sentence pair of the training set.

    For image ``i`` and pair ``p`` about subject ``X`` the true sentence is the affirmative
    one when ``X`` is shown (with the pair's number matching: singular for one instance,
    plural for several) and the negated one when ``X`` is absent; pairs whose number does
    not match a shown subject are skipped. The term is the mean over valid (i, p) of
    ``softplus(s · (cos(v_i, t_false) − cos(v_i, t_true)))``, averaged with equal weight
    over three groups: shown subjects, absent subjects that share their colour or shape
    with a shown one (``related[X, Y]``: X and Y share an attribute), and other absent subjects.
    """
    sentences = torch.cat([pair_aff, pair_neg])
    wanted, inverse = torch.unique(sentences, return_inverse=True)
    text = F.normalize(_encode_short_text(model, tokens[wanted]), dim=-1)
    n_pairs = pair_aff.numel()
    logits = scale * vision @ text.T
    aff_logit, neg_logit = logits[:, inverse[:n_pairs]], logits[:, inverse[n_pairs:]]
    count = counts[:, pair_combo]
    shown = count > 0
    valid = ~shown | (shown & ((count > 1) == pair_plural[None, :]))
    margin = torch.where(shown, neg_logit - aff_logit, aff_logit - neg_logit)
    loss = F.softplus(margin)
    near = ((shown.float() @ related[pair_combo][:, pair_combo].float().T) > 0) & ~shown
    groups = (shown & valid, near, ~shown & ~near)
    parts = [loss[mask].mean() for mask in groups if mask.any()]
    return torch.stack(parts).mean()


def _spread_text(model, tokens: torch.Tensor, steps: int, lr: float) -> tuple[float, float]:
    """Spread the text embeddings of all training sentences apart before contrastive training.

    Minimises the uniformity loss ``log mean_{j≠k} exp(-2 ||t_j - t_k||²)`` over the
    normalised text embeddings ``t`` for ``steps`` Adam steps on the text tower alone.
    Returns the loss before and after.
    """
    text_params = [p for n, p in model.named_parameters() if not n.startswith("visual.") and n != "logit_scale"]
    optimizer = torch.optim.Adam(text_params, lr=lr)
    off_diagonal = ~torch.eye(tokens.shape[0], dtype=torch.bool)
    first = last = float("nan")
    for number in range(steps):
        text = F.normalize(_encode_short_text(model, tokens), dim=-1)
        loss = torch.log(torch.exp(-2.0 * torch.cdist(text, text).pow(2))[off_diagonal].mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        last = float(loss.detach())
        first = last if number == 0 else first
    return first, last


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _check_positive(name: str, value, kind=int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
        raise InputError(f"{name}={value!r} is invalid: give a positive {'number' if kind is float else 'integer'}")


def _check_training_arguments(epochs, batch_size, threads, lr) -> None:
    _check_positive("epochs", epochs)
    _check_positive("batch_size", batch_size)
    _check_positive("threads", threads)
    _check_positive("lr", lr, float)
    if batch_size < 2:
        raise InputError(f"batch_size={batch_size} is too small for a contrastive loss: give at least 2")


@dataclasses.dataclass
class _TrainData:
    """The training set as tensors: images, sentence tokens and who-shows-what indices.

    ``counts[i, c]`` is how many instances of (colour, shape) combination ``c`` image ``i``
    shows; ``pair_*`` describe each (affirmative, negated) sentence pair of the training set
    (sentence indices, subject combination, plural wording); ``rec_*`` describe each training
    record (its image, caption sentence, subject combination, negated caption);
    ``image_records[i]`` holds the indices of image ``i``'s records.
    """

    image_files: list[str]
    images: torch.Tensor
    sentences: list[str]
    tokens: torch.Tensor
    counts: torch.Tensor
    present: torch.Tensor
    related: torch.Tensor
    pair_aff: torch.Tensor
    pair_neg: torch.Tensor
    pair_combo: torch.Tensor
    pair_plural: torch.Tensor
    rec_image: torch.Tensor
    rec_caption: torch.Tensor
    rec_combo: torch.Tensor
    rec_negated: torch.Tensor
    image_records: list[torch.Tensor]


def _train_data(records: list[dict[str, Any]], benchmark: Path, preprocess, tokenizer) -> _TrainData:
    """Load and index the training pairs ``records`` (their images under ``benchmark/images``)."""
    image_files = list(dict.fromkeys(r["image_file"] for r in records))
    image_index = {name: i for i, name in enumerate(image_files)}
    images = load_images([benchmark / "images" / name for name in image_files], preprocess)
    sentences = sorted({r["caption"] for r in records} | {r["foil"] for r in records})
    sentence_index = {text: i for i, text in enumerate(sentences)}
    tokens = tokenizer(sentences)
    tokens = tokens[:, : int((tokens != 0).sum(dim=1).max())]

    combos = sorted({(o[0], o[1]) for r in records for o in r["objects"]}
                    | {(r["subject"]["colour"], r["subject"]["shape"]) for r in records})
    combo_index = {c: i for i, c in enumerate(combos)}
    counts = torch.zeros(len(image_files), len(combos), dtype=torch.long)
    for r in records:
        for o in r["objects"]:
            counts[image_index[r["image_file"]], combo_index[(o[0], o[1])]] = int(o[2]) if len(o) > 2 else 1
    present = counts > 0
    related = torch.tensor([[a[0] == b[0] or a[1] == b[1] for b in combos] for a in combos])
    inventory = {}
    for r in records:
        affirmative, negative = (r["foil"], r["caption"]) if r["caption_negated"] else (r["caption"], r["foil"])
        inventory[(affirmative, negative)] = (combo_index[(r["subject"]["colour"], r["subject"]["shape"])],
                                             bool(r.get("plural", False)))
    rec_image = torch.tensor([image_index[r["image_file"]] for r in records])
    image_records = [[] for _ in image_files]
    for r_index, image in enumerate(rec_image.tolist()):
        image_records[image].append(r_index)
    return _TrainData(
        image_files=image_files, images=images, sentences=sentences, tokens=tokens, counts=counts,
        present=present, related=related,
        pair_aff=torch.tensor([sentence_index[a] for a, _ in inventory]),
        pair_neg=torch.tensor([sentence_index[n] for _, n in inventory]),
        pair_combo=torch.tensor([c for c, _ in inventory.values()]),
        pair_plural=torch.tensor([p for _, p in inventory.values()]),
        rec_image=rec_image,
        rec_caption=torch.tensor([sentence_index[r["caption"]] for r in records]),
        rec_combo=torch.tensor([combo_index[(r["subject"]["colour"], r["subject"]["shape"])] for r in records]),
        rec_negated=torch.tensor([bool(r["caption_negated"]) for r in records]),
        image_records=[torch.tensor(r) for r in image_records],
    )


@dataclasses.dataclass
class _EvalData:
    """The held-out benchmark as tensors: images, caption/foil tokens (also with "some"
    inserted into plural affirmatives) and whether the caption is the negated sentence."""

    images: torch.Tensor
    captions: torch.Tensor
    foils: torch.Tensor
    captions_some: torch.Tensor
    foils_some: torch.Tensor
    negated_caption: torch.Tensor


def _eval_data(entries: list[dict[str, Any]], benchmark: Path, preprocess, tokenizer) -> _EvalData:
    return _EvalData(
        images=load_images([benchmark / "images" / e["image_file"] for e in entries], preprocess),
        captions=tokenizer([e["caption"] for e in entries]),
        foils=tokenizer([e["foil"] for e in entries]),
        captions_some=tokenizer([_insert_some(e["caption"]) for e in entries]),
        foils_some=tokenizer([_insert_some(e["foil"]) for e in entries]),
        negated_caption=torch.tensor([e.get("provenance_of_foils") == "zero_to_something" for e in entries]),
    )


def _make_optimizer(model, lr: float, weight_decay: float, text_lr_scale: float) -> torch.optim.AdamW:
    """AdamW (betas 0.9/0.98) over four parameter groups: (vision, text) × (decayed weight
    matrices, the rest); each group's ``lr_scale`` is ``text_lr_scale`` for the text tower, else 1."""
    groups = {}
    for name, param in model.named_parameters():
        tower = "vision" if name.startswith("visual.") or name == "logit_scale" else "text"
        decays = param.ndim >= 2 and "embedding" not in name
        groups.setdefault((tower, decays), []).append(param)
    return torch.optim.AdamW(
        [{"params": params, "weight_decay": weight_decay if decays else 0.0,
          "lr_scale": text_lr_scale if tower == "text" else 1.0}
         for (tower, decays), params in sorted(groups.items())],
        lr=lr, betas=(0.9, 0.98), eps=1e-6,
    )


def _evaluate(model, images: torch.Tensor, caps: torch.Tensor, foils: torch.Tensor
              ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Held-out caption > foil accuracy and the logits, in eval mode; leaves the model in train mode."""
    model.eval()
    lc, lf = caption_foil_logits(model, images, caps, foils)
    model.train()
    return float((lc > lf).float().mean()), lc, lf


def _train_step(model, optimizer, data: _TrainData, batch: torch.Tensor, generator: torch.Generator, *,
                flip: bool, clip_weight: float, hard_negative_weight: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step on the images ``batch`` with all their pairs; returns ``(loss, clip_loss, hard_loss)``.

    With ``flip``, draws the mirroring of each image from ``generator``.
    """
    batch_images = data.images[batch]
    if flip:
        mirrored = torch.rand(batch.numel(), generator=generator) < 0.5
        batch_images = torch.where(mirrored[:, None, None, None], batch_images.flip(-1), batch_images)
    vision = F.normalize(model.encode_image(batch_images), dim=-1)
    idx = torch.cat([data.image_records[i] for i in batch.tolist()])
    row_of_record = torch.cat([torch.full((data.image_records[i].numel(),), b)
                               for b, i in enumerate(batch.tolist())])
    wanted, inverse = torch.unique(data.rec_caption[idx], return_inverse=True)
    t_caption = F.normalize(_encode_short_text(model, data.tokens[wanted]), dim=-1)[inverse]
    scale = model.logit_scale.exp()
    k = idx.numel()
    logits = scale * vision[row_of_record] @ t_caption.T
    caption_true = data.present[data.rec_image[idx]][:, data.rec_combo[idx]] != data.rec_negated[idx][None, :]
    excluded = caption_true & ~torch.eye(k, dtype=torch.bool)
    logits = logits.masked_fill(excluded, float("-inf"))
    target = torch.arange(k)
    clip_loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    hard_loss = _dense_hard_loss(model, vision, scale, data.tokens, data.counts[batch], data.pair_aff,
                                 data.pair_neg, data.pair_combo, data.pair_plural, data.related)
    loss = clip_weight * clip_loss + hard_negative_weight * hard_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))
    return loss, clip_loss, hard_loss


def _train_epoch(model, optimizer, data: _TrainData, generator: torch.Generator, step: int, *, lr: float,
                 total_steps: int, warmup: int, batch_size: int, flip: bool, clip_weight: float,
                 hard_negative_weight: float) -> tuple[dict[str, float], int]:
    """One pass over the training images in an order drawn from ``generator``, skipping a last
    batch of fewer than 2 images. Returns the mean losses and the step count after the epoch."""
    n = len(data.image_files)
    order = torch.randperm(n, generator=generator)
    sums = {"loss": 0.0, "clip_loss": 0.0, "hard_loss": 0.0}
    batches = 0
    for start in range(0, n, batch_size):
        batch = order[start:start + batch_size]
        if batch.numel() < 2:
            continue
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"] * _lr_factor(step, total_steps, warmup)
        loss, clip_loss, hard_loss = _train_step(model, optimizer, data, batch, generator, flip=flip,
                                                 clip_weight=clip_weight,
                                                 hard_negative_weight=hard_negative_weight)
        step += 1
        batches += 1
        sums["loss"] += float(loss.detach())
        sums["clip_loss"] += float(clip_loss.detach())
        sums["hard_loss"] += float(hard_loss.detach())
    return {k: v / max(1, batches) for k, v in sums.items()}, step


def _fit(model, data: _TrainData, evaluation: _EvalData, *, epochs: int, batch_size: int, lr: float, seed: int,
         weight_decay: float, warmup_fraction: float, hard_negative_weight: float, clip_weight: float, flip: bool,
         text_warmup_steps: int, text_lr_scale: float, say: Callable[[str], Any], loaded: float,
         cpu_started: float) -> tuple[list[dict[str, Any]], int]:
    """The text warm-up, then ``epochs`` epochs of training with held-out accuracy after each.

    Returns the per-epoch rows (mean losses, logit scale, held-out accuracy, timings since
    ``loaded``/``cpu_started``) and the number of optimiser steps taken.
    """
    optimizer = _make_optimizer(model, lr, weight_decay, text_lr_scale)
    generator = torch.Generator().manual_seed(seed)
    n = len(data.image_files)
    steps_per_epoch = n // batch_size + (1 if n % batch_size >= 2 else 0)
    total_steps = steps_per_epoch * epochs
    warmup = max(1, int(round(warmup_fraction * total_steps)))

    model.train()
    uniformity = _spread_text(model, data.tokens, text_warmup_steps, lr) if text_warmup_steps else None
    if uniformity is not None:
        say(f"text warm-up: {text_warmup_steps} steps, uniformity loss {uniformity[0]:.3f} -> {uniformity[1]:.3f}")
    history = []
    step = 0
    for epoch in range(1, epochs + 1):
        means, step = _train_epoch(model, optimizer, data, generator, step, lr=lr, total_steps=total_steps,
                                   warmup=warmup, batch_size=batch_size, flip=flip, clip_weight=clip_weight,
                                   hard_negative_weight=hard_negative_weight)
        accuracy, _, _ = _evaluate(model, evaluation.images, evaluation.captions, evaluation.foils)
        row = {"epoch": epoch, **means,
               "logit_scale": float(model.logit_scale.detach().exp()), "heldout_accuracy": accuracy,
               "seconds": time.perf_counter() - loaded,
               "cpu_seconds": time.process_time() - cpu_started}
        history.append(row)
        say(f"epoch {epoch}/{epochs}: loss {row['loss']:.4f} (clip {row['clip_loss']:.4f}, hard "
            f"{row['hard_loss']:.4f}), held-out caption>foil accuracy {accuracy:.3f}, {row['seconds']:.0f}s")
    return history, step


def _metrics(config: dict[str, Any], hyperparameters: dict[str, Any], *, n_train_pairs: int, data: _TrainData,
             eval_keys: list[str], negated_caption: torch.Tensor, steps: int, history: list[dict[str, Any]],
             accuracy: float, accuracy_some: float, caption_logits: torch.Tensor,
             foil_logits: torch.Tensor) -> dict[str, Any]:
    """The training metrics without timings and versions (see :func:`train_toy_clip`)."""
    correct = caption_logits > foil_logits
    by_negation = {
        "caption": float(correct[negated_caption].float().mean()) if negated_caption.any() else None,
        "foil": float(correct[~negated_caption].float().mean()) if (~negated_caption).any() else None,
    }
    return {
        "model_name": MODEL_NAME,
        "config": config,
        "hyperparameters": hyperparameters,
        "n_train_pairs": n_train_pairs,
        "n_train_images": len(data.image_files),
        "n_eval": len(eval_keys),
        "steps": steps,
        "loss_per_epoch": [row["loss"] for row in history],
        "heldout_accuracy_per_epoch": [row["heldout_accuracy"] for row in history],
        "epochs": history,
        "heldout_accuracy": accuracy,
        "heldout_accuracy_by_negation_in": by_negation,
        "heldout_accuracy_with_some": accuracy_some,
        "heldout_logits": {key: [float(c), float(f)] for key, c, f in
                           zip(eval_keys, caption_logits.tolist(), foil_logits.tolist())},
    }


def _save_model(out: Path, config: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """Write the open_clip model config (``ToyCLIP.json``) and the state dict (``toy_clip.pt``) under ``out``."""
    write_json(config, out / CONFIG_FILE)
    with atomic_path(out / CHECKPOINT_FILE) as tmp:
        torch.save(state, tmp)


def _timings_and_versions(*, started: float, loaded: float, trained: float, cpu_started: float) -> dict[str, Any]:
    """Wall seconds of loading, training and in total since ``started`` (``time.perf_counter``), CPU seconds
    since ``cpu_started`` (``time.process_time``), and the torch and open_clip versions."""
    import open_clip

    return {
        "seconds_loading": loaded - started,
        "seconds_training": trained - loaded,
        "seconds_total": time.perf_counter() - started,
        "cpu_seconds_total": time.process_time() - cpu_started,
        "torch_version": torch.__version__,
        "open_clip_version": open_clip.__version__,
    }


def train_toy_clip(benchmark_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                   epochs: int = DEFAULT_EPOCHS, batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR,
                   seed: int = 0, threads: int = 1, log: Callable[[str], Any] | None = print,
                   config: dict[str, Any] | None = None, weight_decay: float = DEFAULT_WEIGHT_DECAY,
                   warmup_fraction: float = DEFAULT_WARMUP_FRACTION,
                   hard_negative_weight: float = DEFAULT_HARD_NEGATIVE_WEIGHT,
                   clip_weight: float = DEFAULT_CLIP_WEIGHT, flip: bool = True,
                   text_warmup_steps: int = DEFAULT_TEXT_WARMUP_STEPS,
                   text_lr_scale: float = DEFAULT_TEXT_LR_SCALE) -> dict[str, Any]:
    """Train the toy CLIP on ``benchmark_dir/train.jsonl`` and evaluate it on ``existence.json``.

    The loss is the module docstring's ``L`` with ``c = clip_weight`` and ``w =
    hard_negative_weight``. After ``text_warmup_steps`` steps of :func:`_spread_text`,
    AdamW (betas 0.9/0.98, weight decay on weight matrices only; the text tower's learning
    rate is ``text_lr_scale * lr``) runs with linear warm-up over ``warmup_fraction`` of the
    steps and cosine decay to zero. Each epoch visits every training image once in a seeded
    order, in batches of ``batch_size`` images that carry all of their caption/foil pairs;
    with ``flip`` each image is mirrored left-right with probability 1/2. Images go through
    open_clip's default evaluation transform once, up front.

    Runs on ``threads`` CPU threads with deterministic algorithms: the same arguments give
    the same weights; a different thread count may round differently. ``config`` is an
    open_clip model config (default :func:`toy_clip_config`). Writes ``ToyCLIP.json``,
    ``toy_clip.pt`` (state dict) and ``training_metrics.json`` (per-epoch losses and
    held-out accuracy, final accuracy overall, by where the negation is and with "some"
    inserted into plural affirmatives, per-instance logits, timings) to ``out_dir`` and
    returns the metrics.
    """
    import open_clip

    started = time.perf_counter()
    cpu_started = time.process_time()
    _check_training_arguments(epochs, batch_size, threads, lr)
    say = log or (lambda message: None)
    benchmark = Path(benchmark_dir)
    out = Path(out_dir)
    config = copy.deepcopy(config) if config is not None else toy_clip_config()
    records = _read_train(benchmark / "train.jsonl")
    eval_keys, eval_entries = _read_eval(benchmark / "existence.json")
    hyperparameters = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "threads": threads,
        "weight_decay": weight_decay, "warmup_fraction": warmup_fraction,
        "hard_negative_weight": hard_negative_weight, "clip_weight": clip_weight, "flip": flip,
        "text_warmup_steps": text_warmup_steps, "text_lr_scale": text_lr_scale, "optimizer": "AdamW(0.9, 0.98)",
        "schedule": "linear warm-up then cosine",
    }

    with _DeterministicCPU(threads):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**copy.deepcopy(config))
        preprocess = evaluation_transform(config)
        tokenizer = _tokenizer()
        data = _train_data(records, benchmark, preprocess, tokenizer)
        evaluation = _eval_data(eval_entries, benchmark, preprocess, tokenizer)
        loaded = time.perf_counter()
        say(f"toy CLIP: {len(records)} training pairs on {len(data.image_files)} images, {len(eval_entries)} eval "
            f"instances, {len(data.sentences)} distinct sentences (loaded in {loaded - started:.1f}s)")

        history, step = _fit(model, data, evaluation, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                             weight_decay=weight_decay, warmup_fraction=warmup_fraction,
                             hard_negative_weight=hard_negative_weight, clip_weight=clip_weight, flip=flip,
                             text_warmup_steps=text_warmup_steps, text_lr_scale=text_lr_scale, say=say,
                             loaded=loaded, cpu_started=cpu_started)
        trained = time.perf_counter()
        model.eval()
        accuracy, caption_logits, foil_logits = _evaluate(model, evaluation.images, evaluation.captions,
                                                          evaluation.foils)
        accuracy_some, _, _ = _evaluate(model, evaluation.images, evaluation.captions_some, evaluation.foils_some)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}

    _save_model(out, config, state)
    metrics = _metrics(config, hyperparameters, n_train_pairs=len(records), data=data, eval_keys=eval_keys,
                       negated_caption=evaluation.negated_caption, steps=step, history=history, accuracy=accuracy,
                       accuracy_some=accuracy_some, caption_logits=caption_logits, foil_logits=foil_logits)
    metrics.update(_timings_and_versions(started=started, loaded=loaded, trained=trained, cpu_started=cpu_started))
    write_json(metrics, out / METRICS_FILE)
    say(f"toy CLIP trained in {metrics['seconds_total']:.0f}s: held-out accuracy {accuracy:.3f} "
        f"(with 'some': {accuracy_some:.3f}); wrote {out / CONFIG_FILE}, {out / CHECKPOINT_FILE}")
    return metrics


def load_toy_clip(out_dir: str | os.PathLike):
    """``(model, preprocess, tokenizer)`` of a trained toy CLIP, loaded through open_clip.

    Registers ``out_dir/ToyCLIP.json`` with ``open_clip.add_model_config`` and calls
    ``open_clip.create_model_and_transforms("ToyCLIP", pretrained=out_dir/toy_clip.pt)``;
    the model is in eval mode and ``preprocess`` is the evaluation transform.
    """
    import open_clip

    out = Path(out_dir)
    for name in (CONFIG_FILE, CHECKPOINT_FILE):
        if not (out / name).exists():
            raise InputError(f"{out / name} not found; train the toy CLIP first with "
                             f"train_toy_clip(benchmark_dir, {str(out)!r})")
    open_clip.add_model_config(out / CONFIG_FILE)
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL_NAME, pretrained=str(out / CHECKPOINT_FILE))
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(MODEL_NAME)
