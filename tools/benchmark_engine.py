"""Check the fast negation engine against the direct reference and time both.

On a random-init open_clip ViT-B/32 (fixed seed) with synthetic 224x224 images and
VALSE-like sentence pairs, the reference (one full library forward per intervention) and
the engine compute causal tracing and image ablation for the same instances. Agreement is
required to ``--tol`` (absolute) on S*, d*, CTE and IAE; CTE is compared only where
``|d| > --cte-min-d``, and the compared instances are chosen with ``|d| >= --select-min-d``
because a random-init model gives small differences ``d`` and the CTE error grows as
``error(d*) / |d|``. The engine is also timed on more instances (``--engine-instances``) for
a stable per-instance figure, its runs alternating with the reference's so that both see
the same machine load, and the wall time of the whole study on this machine is projected
from the measured per-instance times.

    python tools/benchmark_engine.py --instances 4 --threads 2

The follow-up tracing variants (pair patching of every pair of generic positions from the
negator on, and the MHA/MLP output tracing) are timed against causal tracing on the same
timing instances, the three alternating ``--followup-repeats`` times; ``--followups-only``
runs only this part (no reference):

    python tools/benchmark_engine.py --followups-only --threads 2

Exits 1 when engine and reference disagree, an invariant fails, or pair patching costs more
than ``--max-pair-ratio`` (3) times causal tracing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clip_interp.encoding import encode_images, encode_texts
from clip_interp.models import load_model
from clip_interp.negation.causal_tracing import causal_tracing_effects
from clip_interp.negation.image_ablation import (
    image_ablation_activations,
    image_ablation_effects,
    image_ablation_effects_from_activations,
)
from clip_interp.negation.library_references import reference_causal_tracing, reference_image_ablation
from clip_interp.negation.pair_patching import pair_patching_effects
from clip_interp.negation.positions import with_generic_positions
from clip_interp.negation.site_tracing import site_tracing_effects
from clip_interp.negation.tracing_kernel import tracing_instances

from synthetic_images import synthetic_pixels

PAIRS = [
    ("There are no people in the picture.", "There are some people in the picture."),
    ("There is no dog.", "There is a dog."),
    ("There are no cars parked on the street.", "There are some cars parked on the street."),
    ("There is no clock on the wall.", "There is a clock on the wall."),
    ("There are no clouds in the sky.", "There are some clouds in the sky."),
    ("There is no person visible.", "There is a person visible."),
    ("There are no trees behind the wooden fence.", "There are some trees behind the wooden fence."),
    ("There is no cat sleeping on the couch.", "There is a cat sleeping on the couch."),
    ("There are no plates on the table.", "There are some plates on the table."),
    ("There is no traffic light at the intersection.", "There is a traffic light at the intersection."),
    ("There are no birds.", "There are some birds."),
    ("There are no boats in the water near the dock.", "There are some boats in the water near the dock."),
]
STUDY = {"tracing_instances": 490, "ablation_images": 505, "text_variants": 2, "cannot_pairs": 554,
         "sized_images": 249}


def candidates(model, n: int, seed: int):
    """``n`` instances: sentence pairs cycled with alternating negation side, and one image each."""
    rows = []
    for i in range(n):
        negated, non_negated = PAIRS[i % len(PAIRS)]
        side = "caption" if (i + i // len(PAIRS)) % 2 == 0 else "foil"
        rows.append({"key": f"synthetic_{i:04d}", "negation": side, "negated": negated, "non_negated": non_negated})
    frame = tracing_instances(model, pd.DataFrame(rows))
    in_caption = frame["negation"] == "caption"
    frame["caption"] = frame["negated"].where(in_caption, frame["non_negated"])
    frame["foil"] = frame["non_negated"].where(in_caption, frame["negated"])
    return frame, synthetic_pixels(n, model.image_size, seed)


class Timer:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    @classmethod
    def zero(cls) -> "Timer":
        total = cls()
        total.wall = total.cpu = 0.0
        return total

    def __iadd__(self, other: "Timer") -> "Timer":
        self.wall += other.wall
        self.cpu += other.cpu
        return self


def max_abs(a, b) -> float:
    return float(np.nanmax(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)))) if len(a) else 0.0


def fmt_s(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.3f} s"


@torch.inference_mode()
def time_clipseg(device, n_images: int) -> float:
    """Wall seconds per image of a random-init CLIPSeg with the rd64-refined architecture (ViT-B/16, 352 px)."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    config = CLIPSegConfig(vision_config={"patch_size": 16, "image_size": 352}, reduce_dim=64,
                           use_complex_transposed_convolution=True)
    segmenter = CLIPSegForImageSegmentation(config).eval().to(device)
    pixels = torch.randn(n_images, 3, 352, 352, device=device)
    ids = torch.randint(1, 1000, (n_images, 6), device=device)
    segmenter(input_ids=ids[:1], pixel_values=pixels[:1])
    with Timer() as timer:
        segmenter(input_ids=ids, pixel_values=pixels)
    return timer.wall / n_images


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=4, help="instances run by both reference and engine")
    ap.add_argument("--engine-instances", type=int, default=64, help="instances for the engine's per-instance time")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64, help="instances per causal-tracing batch")
    ap.add_argument("--image-batch-size", type=int, default=16, help="images per ablation batch")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--cte-min-d", type=float, default=1e-2, help="compare CTE only where |d| exceeds this")
    ap.add_argument("--select-min-d", type=float, default=0.1,
                    help="compared instances (and the invariant checks) need |d| at least this")
    ap.add_argument("--clipseg-images", type=int, default=8, help="images for the CLIPSeg time per image")
    ap.add_argument("--json", type=Path, help="also write the measurements here")
    ap.add_argument("--followup-repeats", type=int, default=3, help="alternating runs of the follow-up timings")
    ap.add_argument("--max-pair-ratio", type=float, default=3.0,
                    help="pair patching may cost at most this many times causal tracing")
    ap.add_argument("--followups-only", action="store_true",
                    help="time only the follow-up tracing variants against causal tracing (no reference)")
    return ap.parse_args(argv)


def load_benchmark_model(args):
    """Set threads and seed, load the random-init ViT-B/32; returns it and the load average before the runs."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    load_before = os.getloadavg()[0]
    model = load_model({"backend": "open_clip", "name": "ViT-B-32", "random_init": True, "seed": args.seed},
                       args.device)
    print(f"model: random-init open_clip ViT-B-32 (seed {args.seed}) on {model.device}; torch {torch.__version__}, "
          f"{args.threads} thread(s), {os.cpu_count()} CPU(s), load average {load_before:.1f}")
    return model, load_before


@dataclass
class Instances:
    """Instances run by both reference and engine (``compared``) and by the engine alone for its timing."""

    compared: pd.DataFrame
    compared_pixels: torch.Tensor
    timing: pd.DataFrame
    timing_pixels: torch.Tensor


@torch.inference_mode()
def similarity_differences(model, frame: pd.DataFrame, pixels: torch.Tensor) -> np.ndarray:
    """``d = S(image, caption) - S(image, foil)`` of every instance."""
    img_emb = encode_images(model, pixels)
    s_cap = model.similarity(img_emb, encode_texts(model, frame["caption"].tolist()))
    s_foil = model.similarity(img_emb, encode_texts(model, frame["foil"].tolist()))
    return (s_cap - s_foil).cpu().numpy()


def choose_instances(model, args) -> Instances:
    """From a candidate pool, the first ``--instances`` with ``|d| >= --select-min-d`` are compared; the
    first ``--engine-instances`` of the pool (any ``|d|``) time the engine."""
    pool_size = max(args.engine_instances, 8 * args.instances)
    pool, pool_pixels = candidates(model, pool_size, args.seed)
    pool["d"] = similarity_differences(model, pool, pool_pixels)
    chosen = np.flatnonzero(np.abs(pool["d"].to_numpy()) >= args.select_min_d)[: args.instances]
    if len(chosen) < args.instances:
        print(f"only {len(chosen)} of {pool_size} candidates have |d| >= {args.select_min_d}")
    n_timing = args.engine_instances
    inst = Instances(pool.iloc[chosen].reset_index(drop=True), pool_pixels[chosen],
                     pool.iloc[:n_timing].reset_index(drop=True), pool_pixels[:n_timing])
    lengths, timing_lengths = inst.compared["negated_ids"].map(len), inst.timing["negated_ids"].map(len)
    abs_d = np.abs(inst.compared["d"])
    print(f"compared instances: {len(inst.compared)} (tokens {lengths.min()}-{lengths.max()}, "
          f"|d| {abs_d.min():.3f}-{abs_d.max():.3f}); "
          f"engine timing instances: {len(inst.timing)} (tokens {timing_lengths.min()}-{timing_lengths.max()})")
    return inst


def check_reference_tokenizer(frame: pd.DataFrame) -> bool:
    """Whether the ids the reference uses, zero-padded to 77, equal open_clip's tokenizer output."""
    import open_clip

    library_ids = open_clip.get_tokenizer("ViT-B-32")(frame["non_negated"].tolist())
    padded = torch.zeros_like(library_ids)
    for row, ids in enumerate(frame["non_negated_ids"]):
        padded[row, : len(ids)] = torch.as_tensor(ids)
    tokenizer_ok = bool(torch.equal(library_ids, padded))
    print(f"reference text ids equal open_clip's tokenizer output (77, zero-padded): {tokenizer_ok}")
    return tokenizer_ok


def engine_causal_tracing(model, frame, pixels, batch_size: int) -> pd.DataFrame:
    """The engine's causal tracing effects, image embedding included."""
    return causal_tracing_effects(model, frame, encode_images(model, pixels), batch_size=batch_size,
                                  progress=False)


def engine_image_ablation(model, frame, pixels, batch_size: int) -> pd.DataFrame:
    """The engine's image ablation effects, computed from the images."""
    return image_ablation_effects(model, pixels, frame["caption"].tolist(), frame["foil"].tolist(),
                                  keys=frame["key"].tolist(), negation=frame["negation"].tolist(),
                                  batch_size=batch_size, progress=False)


def warm_up(model, inst: Instances, args) -> None:
    """Untimed engine runs on a few timing instances, so that first-call costs stay out of the timings."""
    engine_causal_tracing(model, inst.timing.iloc[:2], inst.timing_pixels[:2], args.batch_size)
    engine_image_ablation(model, inst.timing.iloc[:1], inst.timing_pixels[:1], args.image_batch_size)


@dataclass
class CausalTracing:
    """Timings, max |engine - reference| and engine invariants of causal tracing.

    ``engine`` runs all timing instances once after each reference instance; ``engine_same``
    runs the compared instances alone. ``invariants`` holds, per timing instance with
    ``|d| >= --select-min-d``, |CTE(0, negator) - 1|, |CTE(L, EOT) - 1| and max |CTE| before
    the negator, all zero up to rounding.
    """

    reference: Timer
    engine: Timer
    engine_same: Timer
    n_compared: int
    n_timing: int
    n_forwards: int
    errors: dict
    rows: int
    cte_rows: int
    min_abs_d: float
    invariants: np.ndarray

    @property
    def ref_per(self) -> float:
        return self.reference.wall / self.n_compared

    @property
    def eng_per(self) -> float:
        return self.engine.wall / (self.n_compared * self.n_timing)

    @property
    def eng_per_same(self) -> float:
        return self.engine_same.wall / self.n_compared

    @property
    def cpu_ratio(self) -> float:
        return (self.reference.cpu / self.n_compared) / (self.engine.cpu / (self.n_compared * self.n_timing))


def time_causal_tracing(model, inst: Instances, batch_size: int):
    """Reference on each compared instance, each followed by the engine on all timing instances.

    Returns the reference's rows, the engine's rows on the timing instances and both timers.
    """
    t_ref, t_eng, ref_parts = Timer.zero(), Timer.zero(), []
    for r in range(len(inst.compared)):
        with Timer() as t:
            ref_parts.append(reference_causal_tracing(model, inst.compared.iloc[r:r + 1],
                                                      inst.compared_pixels[r:r + 1]))
        t_ref += t
        with Timer() as t:
            timing_ct = engine_causal_tracing(model, inst.timing, inst.timing_pixels, batch_size)
        t_eng += t
    return pd.concat(ref_parts, ignore_index=True), timing_ct, t_ref, t_eng


def causal_tracing_invariants(model, timing: pd.DataFrame, timing_ct: pd.DataFrame, min_d: float) -> np.ndarray:
    """Per timing instance with ``|d| >= min_d``: |CTE(0, negator) - 1|, |CTE(L, EOT) - 1|, max |CTE before negator|."""
    inv = []
    for _, inst in timing.iterrows():
        rows = timing_ct[timing_ct["key"] == inst["key"]].set_index(["layer", "position"])
        if abs(rows["d"].iloc[0]) < min_d:
            continue
        before = rows[rows.index.get_level_values("position") < inst["negator_pos"]]
        inv.append((abs(rows.loc[(0, inst["negator_pos"]), "cte"] - 1),
                    abs(rows.loc[(model.text.n_layers, inst["eot_pos"]), "cte"] - 1),
                    float(before["cte"].abs().max())))
    return np.asarray(inv) if inv else np.zeros((1, 3))


def benchmark_causal_tracing(model, inst: Instances, args) -> CausalTracing:
    """Time reference and engine causal tracing, compare S*, d* and CTE (where ``|d| > --cte-min-d``) on the
    compared instances, and check the engine's invariants on the timing instances."""
    print("\n== causal tracing (text tower) ==")
    ref_ct, timing_ct, t_ref, t_eng = time_causal_tracing(model, inst, args.batch_size)
    with Timer() as t_same:
        eng_ct = engine_causal_tracing(model, inst.compared, inst.compared_pixels, args.batch_size)
    cmp = inst.compared
    n_fwd = int(sum((ids_len - neg) * (model.text.n_layers + 1) + 2 for ids_len, neg in
                    zip(cmp["negated_ids"].map(len), cmp["negator_pos"])))
    both = eng_ct.merge(ref_ct, on=["key", "layer", "position"], suffixes=("", "_ref"), validate="one_to_one")
    big = both["d"].abs() > args.cte_min_d
    errors = {
        "S_patched": max_abs(both["S_patched"], both["S_patched_ref"]),
        "d_star": max_abs(both["d_star"], both["d_star_ref"]),
        "cte": max_abs(both.loc[big, "cte"], both.loc[big, "cte_ref"]),
    }
    ct = CausalTracing(t_ref, t_eng, t_same, len(cmp), len(inst.timing), n_fwd, errors, len(both), int(big.sum()),
                       both["d"].abs().min(),
                       causal_tracing_invariants(model, inst.timing, timing_ct, args.select_min_d))
    print_causal_tracing(ct, args)
    return ct


def print_causal_tracing(ct: CausalTracing, args) -> None:
    n_cmp, inv, err = ct.n_compared, ct.invariants, ct.errors
    print(f"reference: {n_cmp} instances, {ct.n_forwards} full forwards, {ct.reference.wall:.1f} s wall "
          f"({ct.reference.cpu:.1f} s CPU) = {ct.ref_per:.2f} s/instance")
    print(f"engine:    all {ct.n_timing} instances after each reference instance ({n_cmp} runs), "
          f"{ct.engine.wall:.2f} s wall ({ct.engine.cpu:.2f} s CPU) = {ct.eng_per:.3f} s/instance; "
          f"the {n_cmp} compared instances alone {ct.eng_per_same:.3f} s/instance")
    print(f"speed-up:  {ct.ref_per / ct.eng_per:.0f}x per instance (wall), {ct.cpu_ratio:.0f}x (CPU); "
          f"{ct.ref_per / ct.eng_per_same:.0f}x on the compared instances alone (goal >= 30x)")
    print(f"agreement: max |dS*| {err['S_patched']:.2e}, max |dd*| {err['d_star']:.2e}, "
          f"max |dCTE| {err['cte']:.2e} over {ct.rows} rows (CTE compared where |d| > {args.cte_min_d}: "
          f"{ct.cte_rows} rows; min |d| {ct.min_abs_d:.3f})")
    print(f"invariants (engine, {len(inv)} instances with |d| >= {args.select_min_d}): max |CTE(0, negator) - 1| "
          f"{inv[:, 0].max():.2e}, max |CTE(L, EOT) - 1| {inv[:, 1].max():.2e}, "
          f"max |CTE before negator| {inv[:, 2].max():.2e}")


@dataclass
class ImageAblation:
    """Timings and max |engine - reference| of image ablation.

    The engine's time on the timing images is split into text embeddings (``text``),
    activation forwards (``activations``) and ablations from the activations (``ablations``);
    ``engine_same`` runs the compared images alone, from the images.
    """

    reference: Timer
    text: Timer
    activations: Timer
    ablations: Timer
    engine_same: Timer
    n_compared: int
    n_timing: int
    errors: dict
    rows: int

    @property
    def engine(self) -> Timer:
        total = Timer.zero()
        for part_time in (self.text, self.activations, self.ablations):
            total += part_time
        return total

    @property
    def ref_per(self) -> float:
        return self.reference.wall / self.n_compared

    @property
    def eng_per(self) -> float:
        return self.engine.wall / self.n_timing

    @property
    def eng_per_same(self) -> float:
        return self.engine_same.wall / self.n_compared

    @property
    def cpu_ratio(self) -> float:
        return (self.reference.cpu / self.n_compared) / (self.engine.cpu / self.n_timing)


def time_image_ablation(model, inst: Instances, batch_size: int):
    """Reference on each compared image, each followed by the engine on the next part of the timing images.

    Returns the reference's rows and the timers of the reference, the engine's text embeddings,
    its activation forwards and its ablations.
    """
    t_ref, t_text, t_acts, t_from, ref_parts = Timer.zero(), Timer.zero(), Timer.zero(), Timer.zero(), []
    cmp = inst.compared
    for r, chunk in enumerate(np.array_split(np.arange(len(inst.timing)), len(cmp))):
        with Timer() as t:
            ref_parts.append(reference_image_ablation(
                model, inst.compared_pixels[r:r + 1], cmp["caption"].iloc[r:r + 1].tolist(),
                cmp["foil"].iloc[r:r + 1].tolist(), keys=cmp["key"].iloc[r:r + 1].tolist(),
                negation=cmp["negation"].iloc[r:r + 1].tolist()))
        t_ref += t
        part = inst.timing.iloc[chunk]
        with Timer() as t:
            cap_emb = encode_texts(model, part["caption"].tolist())
            foil_emb = encode_texts(model, part["foil"].tolist())
        t_text += t
        for start in range(0, len(chunk), batch_size):
            sl = slice(start, start + batch_size)
            with Timer() as t:
                acts = image_ablation_activations(model, inst.timing_pixels[chunk[sl]])
            t_acts += t
            with Timer() as t:
                image_ablation_effects_from_activations(model, **acts, caption_emb=cap_emb[sl], foil_emb=foil_emb[sl],
                                                        batch_size=batch_size, progress=False)
            t_from += t
    return pd.concat(ref_parts, ignore_index=True), t_ref, t_text, t_acts, t_from


def benchmark_image_ablation(model, inst: Instances, args) -> ImageAblation:
    """Time reference and engine image ablation and compare d, d* and IAE on the compared images."""
    print("\n== image ablation (vision tower) ==")
    ref_ia, t_ref, t_text, t_acts, t_from = time_image_ablation(model, inst, args.image_batch_size)
    with Timer() as t_same:
        eng_ia = engine_image_ablation(model, inst.compared, inst.compared_pixels, args.image_batch_size)
    both = eng_ia.merge(ref_ia, on=["key", "layer", "component"], suffixes=("", "_ref"), validate="one_to_one")
    errors = {c: max_abs(both[c], both[f"{c}_ref"]) for c in ("d", "d_star", "iae")}
    ia = ImageAblation(t_ref, t_text, t_acts, t_from, t_same, len(inst.compared), len(inst.timing), errors, len(both))
    print_image_ablation(ia, model.vision.n_layers)
    return ia


def print_image_ablation(ia: ImageAblation, n_layers_vision: int) -> None:
    n_cmp, n_tim, engine = ia.n_compared, ia.n_timing, ia.engine
    print(f"reference: {n_cmp} images, {n_cmp * (2 * n_layers_vision + 2)} full image forwards, "
          f"{ia.reference.wall:.1f} s wall ({ia.reference.cpu:.1f} s CPU) = {ia.ref_per:.2f} s/image")
    print(f"engine:    {n_tim} images in {n_cmp} parts, each after a reference image, {engine.wall:.2f} s wall "
          f"({engine.cpu:.2f} s CPU) = {ia.eng_per:.3f} s/image (text {ia.text.wall / n_tim:.3f} + "
          f"activation forwards {ia.activations.wall / n_tim:.3f} + ablations {ia.ablations.wall / n_tim:.3f}); "
          f"the {n_cmp} compared images {ia.eng_per_same:.3f} s/image")
    print(f"speed-up:  {ia.ref_per / ia.eng_per:.1f}x per image (wall), {ia.cpu_ratio:.1f}x (CPU); "
          f"{ia.ref_per / ia.eng_per_same:.1f}x on the compared images alone (goal >= 3x)")
    print(f"agreement: max |dd| {ia.errors['d']:.2e}, max |dd*| {ia.errors['d_star']:.2e}, "
          f"max |dIAE| {ia.errors['iae']:.2e} ({ia.rows} rows)")


@dataclass
class FollowupTiming:
    """Wall and CPU time of causal tracing, pair patching and MHA/MLP tracing on the same instances, summed over
    repeats."""

    causal_tracing: Timer
    pair_patching: Timer
    site_tracing: Timer
    n_instances: int
    repeats: int

    def per_instance(self, timer: Timer) -> float:
        return timer.wall / (self.n_instances * self.repeats)

    @property
    def pair_ratio(self) -> float:
        return self.pair_patching.wall / self.causal_tracing.wall

    @property
    def site_ratio(self) -> float:
        return self.site_tracing.wall / self.causal_tracing.wall


def benchmark_followups(model, inst: Instances, args) -> FollowupTiming:
    """Causal tracing, pair patching (every pair of generic positions from the negator on) and MHA/MLP tracing
    on the timing instances, alternating ``--followup-repeats`` times; image embeddings computed once beforehand."""
    print("\n== follow-up tracing variants vs causal tracing (text tower, same instances) ==")
    frame = with_generic_positions(inst.timing)
    image_emb = encode_images(model, inst.timing_pixels)
    runs = {
        "causal_tracing": lambda: causal_tracing_effects(model, frame, image_emb, batch_size=args.batch_size,
                                                         progress=False),
        "pair_patching": lambda: pair_patching_effects(model, frame, image_emb, batch_size=args.batch_size,
                                                       progress=False),
        "site_tracing": lambda: site_tracing_effects(model, frame, image_emb, batch_size=args.batch_size,
                                                     progress=False),
    }
    pair_patching_effects(model, frame.iloc[:2], image_emb[:2], batch_size=args.batch_size, progress=False)
    site_tracing_effects(model, frame.iloc[:2], image_emb[:2], batch_size=args.batch_size, progress=False)
    timers = {name: Timer.zero() for name in runs}
    for _ in range(args.followup_repeats):
        for name, run in runs.items():
            with Timer() as t:
                run()
            timers[name] += t
    timing = FollowupTiming(timers["causal_tracing"], timers["pair_patching"], timers["site_tracing"], len(frame),
                            args.followup_repeats)
    lengths = frame["negated_ids"].map(len)
    print(f"{len(frame)} instances (tokens {lengths.min()}-{lengths.max()}), {args.followup_repeats} alternating runs "
          f"each, batches of {args.batch_size}")
    for name, label in (("causal_tracing", "causal tracing (resid, 1 position)"),
                        ("pair_patching", "pair patching (5 slots + 10 pairs)"),
                        ("site_tracing", "MHA + MLP output tracing")):
        timer = timers[name]
        print(f"  {label:<36} {timer.wall:7.2f} s wall ({timer.cpu:7.2f} s CPU) = "
              f"{timing.per_instance(timer):.3f} s/instance")
    print(f"ratio:     pair patching / causal tracing = {timing.pair_ratio:.2f}x (goal <= {args.max_pair_ratio:g}x); "
          f"MHA+MLP tracing / causal tracing = {timing.site_ratio:.2f}x")
    return timing


def followup_failures(timing: FollowupTiming, max_ratio: float) -> list[str]:
    if timing.pair_ratio > max_ratio:
        return [f"pair patching costs {timing.pair_ratio:.2f}x causal tracing (limit {max_ratio:g}x)"]
    return []


def time_text_cache(model, timing: pd.DataFrame) -> Timer:
    """Text forwards caching resid and attention patterns for both sentences of every timing instance, 64 a batch."""
    seqs = timing["negated_ids"].tolist() + timing["non_negated_ids"].tolist()
    with Timer() as t_text_cache, torch.inference_mode():
        for start in range(0, len(seqs), 64):
            part = seqs[start:start + 64]
            eot = torch.as_tensor([len(ids) - 1 for ids in part], device=model.device)
            model.text.run(model.tokenizer.pad(part).to(model.device), cache=["resid", "pattern"], pool_index=eot)
    return t_text_cache


def project_study_time(model, inst: Instances, ct: CausalTracing, ia: ImageAblation, args) -> dict:
    """Wall seconds of each step of the whole study (sizes in ``STUDY``), from the measured per-instance times
    and a CLIPSeg time per image."""
    t_text_cache = time_text_cache(model, inst.timing)
    n_tr, n_im, n_var = STUDY["tracing_instances"], STUDY["ablation_images"], STUDY["text_variants"]
    n_cannot, n_sized = STUDY["cannot_pairs"], STUDY["sized_images"]
    per_instance = 1 / len(inst.timing)
    clipseg_per_image = time_clipseg(model.device, args.clipseg_images)
    return {
        f"text cache forwards ({n_var} variants x {n_tr} instances, both sentences, resid + pattern)":
            n_var * n_tr * t_text_cache.wall * per_instance,
        f"image cache forwards ({n_im} images: real + single-colour)": n_im * ia.activations.wall * per_instance,
        f"causal tracing ({n_tr} instances, image embedding included)": n_tr * ct.eng_per,
        f"image ablation from the cache ({n_im} images x {model.vision.n_layers} layers x 2 components)":
            n_im * (ia.ablations.wall + ia.text.wall) * per_instance,
        f"CANNOT cache forwards ({n_cannot} pairs, both sentences, patterns)":
            n_cannot * t_text_cache.wall * per_instance,
        f"subject size ({n_sized} images with the negation in the foil, CLIPSeg rd64 at 352 px, random init)":
            n_sized * clipseg_per_image,
        f"selectivity, summaries, figures ({n_tr} instances; read the caches and tables, no forwards)": 0.0,
    }


def reference_study_time(ct: CausalTracing, ia: ImageAblation) -> float:
    """Wall seconds of the study's causal tracing and image ablation with the reference algorithm."""
    return STUDY["tracing_instances"] * ct.ref_per + STUDY["ablation_images"] * ia.ref_per


def print_projection(parts: dict, reference_total: float, threads: int, device) -> None:
    print(f"\n== projected wall time of the whole study on this machine ({threads} thread(s), {device}) ==")
    for name, seconds in parts.items():
        print(f"  {fmt_s(seconds):>10}  {name}")
    print(f"  {fmt_s(sum(parts.values())):>10}  TOTAL with the engine")
    print(f"  {fmt_s(reference_total):>10}  (the same causal tracing and ablation with the reference algorithm)")


def report_load(load_before: float) -> float:
    """Load average after the runs; notes when other processes shared the CPU."""
    load_after = os.getloadavg()[0]
    if max(load_before, load_after) > (os.cpu_count() or 1):
        print(f"note: load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPU(s): other processes "
              "share the CPU, so wall times are inflated and noisy; the speed-ups compare runs made under the same "
              "load")
    return load_after


def report_failures(ct: CausalTracing, ia: ImageAblation, tokenizer_ok: bool, tol: float) -> list[str]:
    """Disagreements beyond ``tol``, failed invariants and a tokenizer mismatch, one line each."""
    failures = []
    if ct.errors["d_star"] > tol or ct.errors["cte"] > tol or ct.errors["S_patched"] > tol:
        failures.append(f"causal tracing disagrees: {ct.errors}")
    if max(ia.errors.values()) > tol:
        failures.append(f"image ablation disagrees: {ia.errors}")
    if ct.invariants.max() > tol:
        failures.append(f"causal tracing invariants fail: max deviations {ct.invariants.max(axis=0).tolist()}")
    if not tokenizer_ok:
        failures.append("the reference's zero-padded ids differ from open_clip's tokenizer")
    return failures


def write_json(path: Path, args, device, loads, ct: CausalTracing, ia: ImageAblation, parts: dict,
               reference_total: float, failures: list[str], followups: FollowupTiming) -> None:
    """The per-instance times, max errors, projected seconds and failures as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "threads": args.threads, "device": str(device), "load_average": list(loads),
        "compared_instances": ct.n_compared, "engine_instances": ct.n_timing,
        "causal_tracing": {"reference_s_per_instance": ct.ref_per, "engine_s_per_instance": ct.eng_per,
                           "engine_s_per_instance_same": ct.eng_per_same, "max_abs_error": ct.errors},
        "image_ablation": {"reference_s_per_image": ia.ref_per, "engine_s_per_image": ia.eng_per,
                           "engine_s_per_image_same": ia.eng_per_same, "max_abs_error": ia.errors},
        "projection_s": {**parts, "total": sum(parts.values()), "reference_total": reference_total},
        "followups": {"causal_tracing_s_per_instance": followups.per_instance(followups.causal_tracing),
                      "pair_patching_s_per_instance": followups.per_instance(followups.pair_patching),
                      "site_tracing_s_per_instance": followups.per_instance(followups.site_tracing),
                      "pair_ratio": followups.pair_ratio, "site_ratio": followups.site_ratio},
        "failures": failures,
    }, indent=2) + "\n")


def print_result(failures: list[str], tol: float) -> None:
    print("\nRESULT: " + ("FAIL\n  " + "\n  ".join(failures) if failures else
                          f"PASS (engine equals reference to {tol:g}; invariants hold)"))


def main(argv=None) -> int:
    args = parse_args(argv)
    model, load_before = load_benchmark_model(args)
    inst = choose_instances(model, args)
    warm_up(model, inst, args)
    if args.followups_only:
        failures = followup_failures(benchmark_followups(model, inst, args), args.max_pair_ratio)
        report_load(load_before)
        print("\nRESULT: " + ("FAIL\n  " + "\n  ".join(failures) if failures else
                              f"PASS (pair patching within {args.max_pair_ratio:g}x causal tracing)"))
        return 1 if failures else 0
    tokenizer_ok = check_reference_tokenizer(inst.compared)
    ct = benchmark_causal_tracing(model, inst, args)
    ia = benchmark_image_ablation(model, inst, args)
    followups = benchmark_followups(model, inst, args)
    parts = project_study_time(model, inst, ct, ia, args)
    reference_total = reference_study_time(ct, ia)
    print_projection(parts, reference_total, args.threads, model.device)
    load_after = report_load(load_before)
    failures = report_failures(ct, ia, tokenizer_ok, args.tol) + followup_failures(followups, args.max_pair_ratio)
    if args.json:
        write_json(args.json, args, model.device, (load_before, load_after), ct, ia, parts, reference_total, failures,
                   followups)
    print_result(failures, args.tol)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
