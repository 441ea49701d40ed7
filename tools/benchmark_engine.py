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

Exits 1 when engine and reference disagree or an invariant fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clip_interp.models import load_model
from clip_interp.negation import engine as E

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
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def synthetic_pixels(n: int, size: int, seed: int) -> torch.Tensor:
    """Preprocessed (normalised) images: a tinted smooth background with a few coloured rectangles."""
    g = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(n):
        low = torch.rand(1, 3, 7, 7, generator=g)
        img = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[0]
        img = 0.6 * img + 0.4 * torch.rand(3, 1, 1, generator=g)
        for _ in range(int(torch.randint(1, 5, (1,), generator=g))):
            h, w = (int(v) for v in torch.randint(size // 8, size // 2, (2,), generator=g))
            y, x = (int(v) for v in torch.randint(0, size - max(h, w), (2,), generator=g))
            img[:, y:y + h, x:x + w] = torch.rand(3, 1, 1, generator=g)
        img = (img + 0.03 * torch.randn(img.shape, generator=g)).clamp(0, 1)
        images.append(img)
    pixels = torch.stack(images)
    mean, std = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def candidates(model, n: int, seed: int):
    """``n`` instances: sentence pairs cycled with alternating negation side, and one image each."""
    rows = []
    for i in range(n):
        negated, non_negated = PAIRS[i % len(PAIRS)]
        side = "caption" if (i + i // len(PAIRS)) % 2 == 0 else "foil"
        rows.append({"key": f"synthetic_{i:04d}", "negation": side, "negated": negated, "non_negated": non_negated})
    frame = E.tracing_instances(model, pd.DataFrame(rows))
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


def main(argv=None) -> int:
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
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    load_before = os.getloadavg()[0]
    model = load_model({"backend": "open_clip", "name": "ViT-B-32", "random_init": True, "seed": args.seed}, args.device)
    n_layers_text, n_layers_vision = model.text.n_layers, model.vision.n_layers
    print(f"model: random-init open_clip ViT-B-32 (seed {args.seed}) on {model.device}; torch {torch.__version__}, "
          f"{args.threads} thread(s), {os.cpu_count()} CPU(s), load average {load_before:.1f}")

    pool_size = max(args.engine_instances, 8 * args.instances)
    pool, pool_pixels = candidates(model, pool_size, args.seed)
    with torch.inference_mode():
        img_emb = E.encode_images(model, pool_pixels)
        s_cap = model.similarity(img_emb, E.encode_texts(model, pool["caption"].tolist()))
        s_foil = model.similarity(img_emb, E.encode_texts(model, pool["foil"].tolist()))
    pool["d"] = (s_cap - s_foil).cpu().numpy()
    chosen = np.flatnonzero(np.abs(pool["d"].to_numpy()) >= args.select_min_d)[: args.instances]
    if len(chosen) < args.instances:
        print(f"only {len(chosen)} of {pool_size} candidates have |d| >= {args.select_min_d}")
    cmp_frame, cmp_pixels = pool.iloc[chosen].reset_index(drop=True), pool_pixels[chosen]
    timing_frame, timing_pixels = pool.iloc[: args.engine_instances].reset_index(drop=True), pool_pixels[: args.engine_instances]
    lengths = cmp_frame["negated_ids"].map(len)
    print(f"compared instances: {len(cmp_frame)} (tokens {lengths.min()}-{lengths.max()}, "
          f"|d| {np.abs(cmp_frame['d']).min():.3f}-{np.abs(cmp_frame['d']).max():.3f}); "
          f"engine timing instances: {len(timing_frame)} (tokens {timing_frame['negated_ids'].map(len).min()}-"
          f"{timing_frame['negated_ids'].map(len).max()})")

    import open_clip

    library_ids = open_clip.get_tokenizer("ViT-B-32")(cmp_frame["non_negated"].tolist())
    padded = torch.zeros_like(library_ids)
    for row, ids in enumerate(cmp_frame["non_negated_ids"]):
        padded[row, : len(ids)] = torch.as_tensor(ids)
    tokenizer_ok = bool(torch.equal(library_ids, padded))
    print(f"reference text ids equal open_clip's tokenizer output (77, zero-padded): {tokenizer_ok}")

    def run_ct(frame, pixels):
        return E.causal_tracing_effects(model, frame, E.encode_images(model, pixels), batch_size=args.batch_size,
                                        progress=False)

    def run_ia(frame, pixels):
        return E.image_ablation_effects(model, pixels, frame["caption"].tolist(), frame["foil"].tolist(),
                                        keys=frame["key"].tolist(), negation=frame["negation"].tolist(),
                                        batch_size=args.image_batch_size, progress=False)

    run_ct(timing_frame.iloc[:2], timing_pixels[:2])
    run_ia(timing_frame.iloc[:1], timing_pixels[:1])

    print("\n== causal tracing (text tower) ==")
    t_ref_ct, t_eng_ct, ref_parts = Timer.zero(), Timer.zero(), []
    for r in range(len(cmp_frame)):
        with Timer() as t:
            ref_parts.append(E.reference_causal_tracing(model, cmp_frame.iloc[r:r + 1], cmp_pixels[r:r + 1]))
        t_ref_ct += t
        with Timer() as t:
            timing_ct = run_ct(timing_frame, timing_pixels)
        t_eng_ct += t
    ref_ct = pd.concat(ref_parts, ignore_index=True)
    with Timer() as t_eng_ct_same:
        eng_ct = run_ct(cmp_frame, cmp_pixels)
    n_fwd = int(sum((ids_len - neg) * (n_layers_text + 1) + 2 for ids_len, neg in
                    zip(cmp_frame["negated_ids"].map(len), cmp_frame["negator_pos"])))
    both = eng_ct.merge(ref_ct, on=["key", "layer", "position"], suffixes=("", "_ref"), validate="one_to_one")
    big = both["d"].abs() > args.cte_min_d
    ct_err = {
        "S_patched": max_abs(both["S_patched"], both["S_patched_ref"]),
        "d_star": max_abs(both["d_star"], both["d_star_ref"]),
        "cte": max_abs(both.loc[big, "cte"], both.loc[big, "cte_ref"]),
    }
    inv = []
    for _, inst in timing_frame.iterrows():
        rows = timing_ct[timing_ct["key"] == inst["key"]].set_index(["layer", "position"])
        if abs(rows["d"].iloc[0]) < args.select_min_d:
            continue
        before = rows[rows.index.get_level_values("position") < inst["negator_pos"]]
        inv.append((abs(rows.loc[(0, inst["negator_pos"]), "cte"] - 1),
                    abs(rows.loc[(n_layers_text, inst["eot_pos"]), "cte"] - 1), float(before["cte"].abs().max())))
    inv = np.asarray(inv) if inv else np.zeros((1, 3))
    n_eng_ct = len(cmp_frame) * len(timing_frame)
    ref_ct_per, eng_ct_per = t_ref_ct.wall / len(cmp_frame), t_eng_ct.wall / n_eng_ct
    eng_ct_per_same = t_eng_ct_same.wall / len(cmp_frame)
    ct_cpu_ratio = (t_ref_ct.cpu / len(cmp_frame)) / (t_eng_ct.cpu / n_eng_ct)
    print(f"reference: {len(cmp_frame)} instances, {n_fwd} full forwards, {t_ref_ct.wall:.1f} s wall "
          f"({t_ref_ct.cpu:.1f} s CPU) = {ref_ct_per:.2f} s/instance")
    print(f"engine:    all {len(timing_frame)} instances after each reference instance ({len(cmp_frame)} runs), "
          f"{t_eng_ct.wall:.2f} s wall ({t_eng_ct.cpu:.2f} s CPU) = {eng_ct_per:.3f} s/instance; "
          f"the {len(cmp_frame)} compared instances alone {eng_ct_per_same:.3f} s/instance")
    print(f"speed-up:  {ref_ct_per / eng_ct_per:.0f}x per instance (wall), {ct_cpu_ratio:.0f}x (CPU); "
          f"{ref_ct_per / eng_ct_per_same:.0f}x on the compared instances alone (goal >= 30x)")
    print(f"agreement: max |dS*| {ct_err['S_patched']:.2e}, max |dd*| {ct_err['d_star']:.2e}, "
          f"max |dCTE| {ct_err['cte']:.2e} over {len(both)} rows (CTE compared where |d| > {args.cte_min_d}: "
          f"{int(big.sum())} rows; min |d| {both['d'].abs().min():.3f})")
    print(f"invariants (engine, {len(inv)} instances with |d| >= {args.select_min_d}): max |CTE(0, negator) - 1| "
          f"{inv[:, 0].max():.2e}, max |CTE(L, EOT) - 1| {inv[:, 1].max():.2e}, "
          f"max |CTE before negator| {inv[:, 2].max():.2e}")

    print("\n== image ablation (vision tower) ==")
    t_ref_ia, t_text, t_acts, t_from, ref_parts = Timer.zero(), Timer.zero(), Timer.zero(), Timer.zero(), []
    for r, chunk in enumerate(np.array_split(np.arange(len(timing_frame)), len(cmp_frame))):
        with Timer() as t:
            ref_parts.append(E.reference_image_ablation(
                model, cmp_pixels[r:r + 1], cmp_frame["caption"].iloc[r:r + 1].tolist(),
                cmp_frame["foil"].iloc[r:r + 1].tolist(), keys=cmp_frame["key"].iloc[r:r + 1].tolist(),
                negation=cmp_frame["negation"].iloc[r:r + 1].tolist()))
        t_ref_ia += t
        part = timing_frame.iloc[chunk]
        with Timer() as t:
            cap_emb = E.encode_texts(model, part["caption"].tolist())
            foil_emb = E.encode_texts(model, part["foil"].tolist())
        t_text += t
        for start in range(0, len(chunk), args.image_batch_size):
            sl = slice(start, start + args.image_batch_size)
            with Timer() as t:
                acts = E.image_ablation_activations(model, timing_pixels[chunk[sl]])
            t_acts += t
            with Timer() as t:
                E.image_ablation_effects_from_activations(model, **acts, caption_emb=cap_emb[sl], foil_emb=foil_emb[sl],
                                                          batch_size=args.image_batch_size, progress=False)
            t_from += t
    ref_ia = pd.concat(ref_parts, ignore_index=True)
    with Timer() as t_eng_ia_same:
        eng_ia = run_ia(cmp_frame, cmp_pixels)
    both_ia = eng_ia.merge(ref_ia, on=["key", "layer", "component"], suffixes=("", "_ref"), validate="one_to_one")
    ia_err = {c: max_abs(both_ia[c], both_ia[f"{c}_ref"]) for c in ("d", "d_star", "iae")}
    t_eng_ia = Timer.zero()
    for part_time in (t_text, t_acts, t_from):
        t_eng_ia += part_time
    ref_ia_per, eng_ia_per = t_ref_ia.wall / len(cmp_frame), t_eng_ia.wall / len(timing_frame)
    eng_ia_per_same = t_eng_ia_same.wall / len(cmp_frame)
    ia_cpu_ratio = (t_ref_ia.cpu / len(cmp_frame)) / (t_eng_ia.cpu / len(timing_frame))
    print(f"reference: {len(cmp_frame)} images, {len(cmp_frame) * (2 * n_layers_vision + 2)} full image forwards, "
          f"{t_ref_ia.wall:.1f} s wall ({t_ref_ia.cpu:.1f} s CPU) = {ref_ia_per:.2f} s/image")
    print(f"engine:    {len(timing_frame)} images in {len(cmp_frame)} parts, each after a reference image, {t_eng_ia.wall:.2f} s wall "
          f"({t_eng_ia.cpu:.2f} s CPU) = {eng_ia_per:.3f} s/image (text {t_text.wall / len(timing_frame):.3f} + "
          f"activation forwards {t_acts.wall / len(timing_frame):.3f} + ablations {t_from.wall / len(timing_frame):.3f}); "
          f"the {len(cmp_frame)} compared images {eng_ia_per_same:.3f} s/image")
    print(f"speed-up:  {ref_ia_per / eng_ia_per:.1f}x per image (wall), {ia_cpu_ratio:.1f}x (CPU); "
          f"{ref_ia_per / eng_ia_per_same:.1f}x on the compared images alone (goal >= 3x)")
    print(f"agreement: max |dd| {ia_err['d']:.2e}, max |dd*| {ia_err['d_star']:.2e}, max |dIAE| {ia_err['iae']:.2e} "
          f"({len(both_ia)} rows)")

    seqs = timing_frame["negated_ids"].tolist() + timing_frame["non_negated_ids"].tolist()
    with Timer() as t_text_cache, torch.inference_mode():
        for start in range(0, len(seqs), 64):
            part = seqs[start:start + 64]
            eot = torch.as_tensor([len(ids) - 1 for ids in part], device=model.device)
            model.text.run(model.tokenizer.pad(part).to(model.device), cache=["resid", "pattern"], pool_index=eot)

    n_tr, n_im, n_var = STUDY["tracing_instances"], STUDY["ablation_images"], STUDY["text_variants"]
    n_cannot, n_sized = STUDY["cannot_pairs"], STUDY["sized_images"]
    per_instance = 1 / len(timing_frame)
    clipseg_per_image = time_clipseg(model.device, args.clipseg_images)
    parts = {
        f"text cache forwards ({n_var} variants x {n_tr} instances, both sentences, resid + pattern)":
            n_var * n_tr * t_text_cache.wall * per_instance,
        f"image cache forwards ({n_im} images: real + single-colour)": n_im * t_acts.wall * per_instance,
        f"causal tracing ({n_tr} instances, image embedding included)": n_tr * eng_ct_per,
        f"image ablation from the cache ({n_im} images x {n_layers_vision} layers x 2 components)":
            n_im * (t_from.wall + t_text.wall) * per_instance,
        f"CANNOT cache forwards ({n_cannot} pairs, both sentences, patterns)": n_cannot * t_text_cache.wall * per_instance,
        f"subject size ({n_sized} images with the negation in the foil, CLIPSeg rd64 at 352 px, random init)":
            n_sized * clipseg_per_image,
        f"selectivity, summaries, figures ({n_tr} instances; read the caches and tables, no forwards)": 0.0,
    }
    total = sum(parts.values())
    reference_total = n_tr * ref_ct_per + n_im * ref_ia_per
    print(f"\n== projected wall time of the whole study on this machine ({args.threads} thread(s), {model.device}) ==")
    for name, seconds in parts.items():
        print(f"  {fmt_s(seconds):>10}  {name}")
    print(f"  {fmt_s(total):>10}  TOTAL with the engine")
    print(f"  {fmt_s(reference_total):>10}  (the same causal tracing and ablation with the reference algorithm)")
    load_after = os.getloadavg()[0]
    if max(load_before, load_after) > (os.cpu_count() or 1):
        print(f"note: load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPU(s): other processes "
              "share the CPU, so wall times are inflated and noisy; the speed-ups compare runs made under the same load")

    failures = []
    if ct_err["d_star"] > args.tol or ct_err["cte"] > args.tol or ct_err["S_patched"] > args.tol:
        failures.append(f"causal tracing disagrees: {ct_err}")
    if max(ia_err.values()) > args.tol:
        failures.append(f"image ablation disagrees: {ia_err}")
    if inv.max() > args.tol:
        failures.append(f"causal tracing invariants fail: max deviations {inv.max(axis=0).tolist()}")
    if not tokenizer_ok:
        failures.append("the reference's zero-padded ids differ from open_clip's tokenizer")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "threads": args.threads, "device": str(model.device), "load_average": [load_before, load_after],
            "compared_instances": len(cmp_frame), "engine_instances": len(timing_frame),
            "causal_tracing": {"reference_s_per_instance": ref_ct_per, "engine_s_per_instance": eng_ct_per,
                               "engine_s_per_instance_same": eng_ct_per_same, "max_abs_error": ct_err},
            "image_ablation": {"reference_s_per_image": ref_ia_per, "engine_s_per_image": eng_ia_per,
                               "engine_s_per_image_same": eng_ia_per_same, "max_abs_error": ia_err},
            "projection_s": {**parts, "total": total, "reference_total": reference_total},
            "failures": failures,
        }, indent=2) + "\n")
    print("\nRESULT: " + ("FAIL\n  " + "\n  ".join(failures) if failures else
                          f"PASS (engine equals reference to {args.tol:g}; invariants hold)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
