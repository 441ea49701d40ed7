r"""Benchmark the decomposition study's two hot paths and print the figures the README records.

On random-init open_clip ViT-B/32 and ViT-B/16 (fixed seed) with synthetic 224x224 images:

1. Decomposition vs the reference algorithm (``reference_decompose``: every query's (B, T, T, H, D)
   tensor built per layer, then the class query kept). Every term must agree to ``--tol``
   (absolute, the embeddings being O(1)); printed: the speed ratio (reference time / decomposition
   time) and the peak-memory ratio (reference / decomposition, the peak working memory above the
   memory held before the call). Goals at batch 8 on ViT-B/16: >= 10x faster, >= 20x less memory.
2. Decomposition overhead: throughput of decomposing (heads summed over sources, [L, H, D] per image,
   with the class-to-class terms, as float32 arrays as the store writes them) relative to a plain image forward of
   the same model and batch (open_clip's ``encode_image``), with and without dividing by ||e|| (the store's units).
   Goal: >= 0.85x, and the normalisation costs nothing measurable.
3. TEXTSPAN, covariance form vs direct form, for every head of the last ``--textspan-layers`` layers
   of ViT-B/32: ``--textspan-n`` images' contributions, a ``--pool`` of M descriptions embedded by the
   model's text tower, K = ``--texts-per-head`` texts, rank ``--rank``. The contributions of
   ``--textspan-images`` synthetic images are computed (``--texts random``: random unit directions
   stand in for the pool's embeddings, for a quick run; the timing depends on M and D only); when N is
   larger, each head's N rows are drawn from a Gaussian with that head's empirical mean and covariance
   (the timing depends on N, M, D and K only). The covariance form runs on every head, the direct form
   on the first ``--direct-heads`` heads; the same texts are required on those heads. Goal: >= 20x at
   N = 10,000, M = 3,498, K = 20.
4. TEXTSPAN K sweep (``textspan_sweep``) vs one TEXTSPAN run at its largest K, on a synthetic in-memory
   store of ``--sweep-n`` images, ``--sweep-layers`` layers x ``--sweep-heads`` heads of width
   ``--sweep-width`` (each head: Gaussian rows with a decaying spectrum in a random basis), every layer
   replaced (none before them to mean-ablate), pools of ``--sweep-pool`` random unit texts, a classifier of
   ``--sweep-classes`` random unit classes and the labels the embedding predicts. Timed: TEXTSPAN of every
   head at the largest K of ``--sweep-k`` (``textspan_heads``, one pool), that plus its reconstruction check
   (``reconstruction_accuracy``, what the ``textspan`` rule runs), and the whole sweep (directions of the three
   methods and the accuracy of every (method, pool, K)) with one pool and with ``--sweep-pools`` pools.
   Goal: the one-pool sweep <= 2x the TEXTSPAN run. The sweep's TEXTSPAN accuracy at the largest K must equal
   the reconstruction check's.

Peak memory on the CPU is the peak resident set size above the size before the call, sampled every
millisecond by a thread, with glibc told (``mallopt``) to serve every allocation above 64 KiB by
``mmap`` so that freed tensors leave the resident set at once; on CUDA,
``torch.cuda.max_memory_allocated`` above the allocation before. Each timed call is also a memory
measurement; the calls of the agreement check are the warm-up.

    python tools/benchmark_decomposition.py --threads 1 --repeats 1 --batch 8 --models ViT-B-16 --sections reference
    python tools/benchmark_decomposition.py --threads 1 --sections textspan --texts random \
        --textspan-images 32 --direct-heads 2
    python tools/benchmark_decomposition.py --threads 1 --sections sweep

Times are wall and process-CPU seconds; on the CPU the ratios use CPU seconds (the work done), which a
shared, loaded machine does not inflate the way it inflates wall time.

Exits 1 when the two decompositions, the two TEXTSPAN forms, or the sweep and the reconstruction check disagree.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from clip_interp.decomposition.components import decompose
from clip_interp.decomposition.data import read_description_pool
from clip_interp.decomposition.reference import reference_decompose
from clip_interp.decomposition.table import FIELDS, TERMS, ComponentTable
from clip_interp.decomposition.textspan import (
    reconstruction_accuracy,
    textspan_covariance,
    textspan_direct,
    textspan_heads,
)
from clip_interp.decomposition.textspan_sweep import textspan_sweep
from clip_interp.encoding import encode_texts
from clip_interp.models import layer_index, load_model

from synthetic_images import synthetic_pixels

REPO = Path(__file__).resolve().parents[1]
DEFAULT_POOL = REPO.parent / "shared" / "data" / "text_descriptions" / "image_descriptions_general.txt"


def release_freed_memory() -> None:
    """glibc: allocations above 64 KiB by mmap (returned to the system on free), so RSS follows live memory."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 * 1024)
    libc.mallopt(m_trim_threshold, 128 * 1024)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak working memory of a block above the memory held when it starts (bytes in ``peak``)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        self.start = _rss_bytes()
        self.top = self.start
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.top = max(self.top, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.start
            return
        self.running = False
        self.thread.join()
        self.peak = max(self.top, _rss_bytes()) - self.start


class Seconds:
    """Wall and process-CPU seconds (CPU time: the work done, which a loaded shared machine does not inflate)."""

    def __init__(self, wall: float = 0.0, cpu: float = 0.0):
        self.wall, self.cpu = wall, cpu

    @classmethod
    def median(cls, items: list["Seconds"]) -> "Seconds":
        return cls(statistics.median(i.wall for i in items), statistics.median(i.cpu for i in items))

    def key(self, device: torch.device) -> float:
        """The figure ratios are taken from: CPU seconds on the CPU, wall seconds on a GPU."""
        return self.wall if device.type == "cuda" else self.cpu

    def __str__(self) -> str:
        return f"{self.cpu:.2f} s CPU / {self.wall:.2f} s wall"


def clocked(fn, device: torch.device) -> tuple[Seconds, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return Seconds(time.perf_counter() - wall, time.process_time() - cpu), result


def measured(fn, device: torch.device, repeats: int) -> tuple[Seconds, int]:
    """Median seconds and largest peak working memory (bytes) of ``repeats`` calls."""
    times, peaks = [], []
    for _ in range(repeats):
        with PeakMemory(device) as memory:
            seconds, result = clocked(fn, device)
            del result
        times.append(seconds)
        peaks.append(memory.peak)
    return Seconds.median(times), max(peaks)


def mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.0f} MiB"


def model_of(name: str, device: torch.device):
    return load_model({"backend": "open_clip", "name": name, "random_init": True, "seed": 0}, device)


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


@torch.inference_mode()
def bench_reference(model, name: str, batch: int, args, device) -> bool:
    """Section 1 for one model: agreement, speed ratio and peak-memory ratio."""
    tower = model.vision
    n_tokens = tower.grid_size[0] * tower.grid_size[1] + 1
    needed = 4 * batch * n_tokens**2 * tower.n_heads * tower.d_model
    if needed > 0.8 * available_bytes(device):
        print(f"  {name} batch {batch}: SKIPPED, the reference's (B, T, T, H, D) tensor alone needs "
              f"{mib(needed)} and {mib(available_bytes(device))} are available; lower --batch")
        return True
    pixels = synthetic_pixels(batch, model.image_size, seed=1).to(device)
    fast = decompose(model.vision, pixels)
    slow = reference_decompose(model.vision, pixels)
    error = max(float((getattr(fast, t) - getattr(slow, t)).abs().max()) for t in TERMS)
    embedding_error = float((fast.total() - fast.embedding).abs().max())
    del fast, slow
    t_fast, m_fast = measured(lambda: decompose(model.vision, pixels), device, args.repeats)
    t_slow, m_slow = measured(lambda: reference_decompose(model.vision, pixels), device, args.repeats)
    ok = error <= args.tol and embedding_error <= args.tol
    print(f"  {name} batch {batch}: max |decomposition - reference| = {error:.2e}, max |sum of terms - e| = "
          f"{embedding_error:.2e} ({'ok' if ok else 'FAIL'}, tol {args.tol:g})")
    ratio = t_slow.key(device) / t_fast.key(device)
    print(f"    time: decomposition {t_fast}, reference {t_slow} -> speed ratio {ratio:.1f}x (goal >= 10x)")
    print(f"    peak memory: decomposition {mib(m_fast)}, reference {mib(m_slow)} -> "
          f"ratio {m_slow / max(m_fast, 1):.1f}x (goal >= 20x)")
    return ok


@torch.inference_mode()
def bench_overhead(model, name: str, batch: int, args, device) -> None:
    """Section 2 for one model: decomposition throughput relative to a plain forward, in the store's units
    (divided by ||e||) and in the units of e, to show what the normalisation costs."""
    pixels = synthetic_pixels(batch, model.image_size, seed=2).to(device)
    library = model.source_model.encode_image

    def as_stored(parts):
        return [getattr(parts, name).float().cpu().numpy() for name in (*TERMS, "class_attention", "embedding_norm")]

    def decompose_raw():
        return as_stored(decompose(model.vision, pixels, convention=args.convention))

    def decompose_unit():
        return as_stored(decompose(model.vision, pixels, convention=args.convention).unit())

    library(pixels)  # warm-up
    times = {"plain": [], "raw": [], "unit": []}
    for _ in range(args.repeats):  # alternated, so all see the same machine load
        times["plain"].append(measured(lambda: library(pixels), device, 1)[0])
        times["raw"].append(measured(decompose_raw, device, 1)[0])
        times["unit"].append(measured(decompose_unit, device, 1)[0])
    t_plain, t_raw, t_unit = (Seconds.median(times[k]) for k in ("plain", "raw", "unit"))
    print(f"  {name} batch {batch} ({args.convention}): plain forward (open_clip encode_image) {t_plain}; "
          f"decomposition [L,H,D] in the units of e {t_raw} -> {t_plain.key(device) / t_raw.key(device):.2f}x, "
          f"divided by ||e|| as the store holds it {t_unit} -> {t_plain.key(device) / t_unit.key(device):.2f}x "
          f"the plain forward's throughput (goal >= 0.85x); normalising: {t_unit.key(device) / t_raw.key(device):.3f}x "
          "the time")


@torch.inference_mode()
def head_contributions(model, layers: list[int], n_images: int, batch: int,
                       device) -> dict[tuple[int, int], torch.Tensor]:
    """Each head's contributions (n_images, E) for ``layers``, from synthetic images."""
    parts = []
    for start in range(0, n_images, batch):
        pixels = synthetic_pixels(min(batch, n_images - start), model.image_size, seed=100 + start).to(device)
        parts.append(decompose(model.vision, pixels).heads[:, [layer_index(layer) for layer in layers]].cpu())
    heads = torch.cat(parts)
    return {(layer, head): heads[:, i, head] for i, layer in enumerate(layers) for head in range(heads.shape[2])}


def resample(contributions: torch.Tensor, n: int, seed: int, shrinkage: float) -> torch.Tensor:
    """``n`` rows from a Gaussian with the empirical mean of ``contributions`` and their covariance shrunk toward
    ``mean(diag) I`` with weight ``shrinkage`` (full rank, however few images were decomposed)."""
    if n <= len(contributions):
        return contributions[:n]
    g = torch.Generator().manual_seed(seed)
    c = contributions.double()
    mean = c.mean(0)
    covariance = torch.cov(c.T, correction=0)
    d = covariance.shape[0]
    covariance = ((1 - shrinkage) * covariance
                  + shrinkage * covariance.diagonal().mean() * torch.eye(d, dtype=torch.float64))
    factor = torch.linalg.cholesky(covariance)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    return (mean + z @ factor.T).float()


def bench_textspan(args, device) -> bool:
    """Section 3: TEXTSPAN covariance vs direct form on the last layers of ViT-B/32."""
    model = model_of("ViT-B-32", device)
    pool = read_description_pool(args.pool).texts
    start = time.perf_counter()
    if args.texts == "model":
        with torch.inference_mode():
            texts = encode_texts(model, pool).float().cpu()
        print(f"  {len(pool)} descriptions of {args.pool.name} embedded by the text tower in "
              f"{time.perf_counter() - start:.1f} s")
    else:
        g = torch.Generator().manual_seed(3)
        texts = torch.nn.functional.normalize(torch.randn(len(pool), model.vision.proj.shape[1], generator=g), dim=-1)
        print(f"  {len(pool)} random unit text directions stand in for the descriptions of {args.pool.name} "
              "(--texts random)")
    layers = list(range(model.vision.n_layers - args.textspan_layers + 1, model.vision.n_layers + 1))
    n_images = min(args.textspan_images, args.textspan_n)
    start = time.perf_counter()
    contributions = head_contributions(model, layers, n_images, args.batch, device)
    resampled = (f"; each head's N = {args.textspan_n} rows drawn from a Gaussian with its empirical mean and "
                 f"covariance (shrinkage {args.shrinkage})" if args.textspan_n > n_images else "")
    print(f"  contributions of {n_images} synthetic images for layers {layers[0]}..{layers[-1]} in "
          f"{time.perf_counter() - start:.1f} s" + resampled)
    heads = sorted(contributions)
    data = {key: resample(contributions[key], args.textspan_n, seed=i, shrinkage=args.shrinkage)
            for i, key in enumerate(heads)}
    k, rank = args.texts_per_head, args.rank
    cov_times, direct_times, same, max_var_error = {}, {}, 0, 0.0
    for key in heads:
        seconds, cov = clocked(lambda: textspan_covariance(data[key], texts, k, rank), device)
        cov_times[key] = seconds.key(device)
        if len(direct_times) < args.direct_heads:
            seconds, direct = clocked(lambda: textspan_direct(data[key], texts, k, rank), device)
            direct_times[key] = seconds.key(device)
            same += int(direct.texts.tolist() == cov.texts.tolist())
            scale = max(float(np.abs(direct.variance).max()), 1e-30)
            max_var_error = max(max_var_error, float(np.abs(direct.variance - cov.variance).max()) / scale)
    n_direct = len(direct_times)
    cov_common = sum(cov_times[key] for key in direct_times) / n_direct
    direct_mean = sum(direct_times.values()) / n_direct
    ok = same == n_direct and max_var_error <= 1e-5
    print(f"  N = {args.textspan_n}, M = {len(pool)}, D = {texts.shape[1]}, K = {k}, rank = {rank}, "
          f"{len(heads)} heads (layers {layers[0]}..{layers[-1]})")
    unit = "s wall" if device.type == "cuda" else "s CPU"
    print(f"    covariance form: {sum(cov_times.values()):.2f} {unit} for all {len(heads)} heads "
          f"({sum(cov_times.values()) / len(heads):.3f} {unit} per head)")
    print(f"    direct form on {n_direct} heads: {direct_mean:.2f} {unit} per head; covariance form on the same heads "
          f"{cov_common:.3f} {unit} per head -> speed ratio {direct_mean / cov_common:.1f}x (goal >= 20x)")
    print(f"    same texts on {same} of {n_direct} heads; max relative explained-variance difference "
          f"{max_var_error:.1e} ({'ok' if ok else 'FAIL'})")
    if n_direct < len(heads):
        print(f"    projected direct form for all {len(heads)} heads: {direct_mean * len(heads) / 60:.1f} min "
              f"({unit[2:]})")
    return ok


def synthetic_store(args) -> tuple[ComponentTable, torch.Tensor, np.ndarray]:
    """Section 4's in-memory store (every term; heads with a decaying spectrum in a random basis per head), a
    classifier of random unit classes and the labels the embedding predicts."""
    g = torch.Generator().manual_seed(11)
    n, n_layers, n_heads, width = args.sweep_n, args.sweep_layers, args.sweep_heads, args.sweep_width
    spectrum = torch.logspace(0, -2, width)
    heads = torch.empty(n, n_layers, n_heads, width)
    for layer in range(n_layers):
        for head in range(n_heads):
            basis = torch.linalg.qr(torch.randn(width, width, generator=g))[0]
            heads[:, layer, head] = (torch.randn(n, width, generator=g) * spectrum) @ basis.T + 0.05 * basis[:, 0]
    arrays = {"heads": heads, "embedding_term": 0.1 * torch.randn(n, width, generator=g),
              "attn_bias": torch.zeros(n, n_layers, width), "mlps": 0.3 * torch.randn(n, n_layers, width, generator=g),
              "ln_bias": torch.zeros(n, width)}
    arrays["embedding"] = sum(arrays[name].sum(dim=tuple(range(1, arrays[name].ndim - 1))) if arrays[name].ndim > 2
                              else arrays[name] for name in TERMS)
    classifier = torch.nn.functional.normalize(torch.randn(args.sweep_classes, width, generator=g), dim=-1)
    labels = (arrays["embedding"] @ classifier.T).argmax(1).numpy()
    return ComponentTable({name: arrays[name] for name in FIELDS}), classifier, labels


def bench_sweep(args) -> bool:
    """Section 4: the TEXTSPAN K sweep against one TEXTSPAN run at its largest K (process-CPU seconds; the calls
    alternate ``--repeats`` times, so that all see the same machine load, and the medians are printed)."""
    table, classifier, labels = synthetic_store(args)
    g = torch.Generator().manual_seed(12)
    pools = {f"pool_{i + 1}": torch.nn.functional.normalize(torch.randn(args.sweep_pool, args.sweep_width,
                                                                        generator=g), dim=-1)
             for i in range(args.sweep_pools)}
    layers, ks, rank = list(range(1, table.n_layers + 1)), sorted(set(args.sweep_k)), args.rank
    cpu = torch.device("cpu")
    counts = sorted({1, args.sweep_pools})
    print(f"  N = {table.n}, {table.n_layers} layers x {table.n_heads} heads, E = {args.sweep_width}, pools of "
          f"M = {args.sweep_pool}, {args.sweep_classes} classes, K in {ks}, rank {rank}; {args.repeats} alternated "
          "repeats (median)")
    times = {"run": [], "check": [], **{count: [] for count in counts}}
    for _ in range(args.repeats):
        seconds, spans = clocked(lambda: textspan_heads(table, pools["pool_1"], layers, ks[-1], rank), cpu)
        times["run"].append(seconds)
        seconds, accuracy = clocked(lambda: reconstruction_accuracy(table, spans, classifier, labels), cpu)
        times["check"].append(seconds)
        for count in counts:
            chosen = dict(list(pools.items())[:count])
            seconds, sweep = clocked(lambda: textspan_sweep(table, chosen, classifier, labels, layers, ks, rank), cpu)
            times[count].append(seconds)
            if count == 1:
                rows = sweep[(sweep["method"] == "textspan") & (sweep["texts_per_head"] == ks[-1])]
                at_largest = rows["accuracy"].item()
    one, check = Seconds.median(times["run"]), Seconds.median(times["check"])
    ok = at_largest == accuracy
    print(f"    one TEXTSPAN run at K = {ks[-1]} for all {len(spans)} heads: {one}")
    print(f"    its reconstruction check (reconstruction_accuracy): {check}; together {one.cpu + check.cpu:.2f} s CPU")
    for count in counts:
        time_of = Seconds.median(times[count])
        print(f"    the whole sweep, {count} pool{'s' if count > 1 else ''} ({len(ks)} K x (TEXTSPAN, random texts) "
              f"per pool + principal components): {time_of} -> {time_of.cpu / one.cpu:.2f}x the TEXTSPAN run"
              f"{' (goal <= 2x)' if count == 1 else ''}, {time_of.cpu / (one.cpu + check.cpu):.2f}x run + check")
    print(f"    sweep's TEXTSPAN accuracy at K = {ks[-1]}: {at_largest:.4f}, reconstruction check {accuracy:.4f} "
          f"({'ok' if ok else 'FAIL'})")
    return ok


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8, help="batch size of sections 1 and 2")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    ap.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-B-16"])
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--convention", choices=["uniform", "per_component"], default="uniform",
                    help="LayerNorm folding of section 2 (the study's default: uniform)")
    ap.add_argument("--sections", nargs="+", default=["reference", "overhead", "textspan", "sweep"],
                    choices=["reference", "overhead", "textspan", "sweep"])
    ap.add_argument("--pool", type=Path, default=DEFAULT_POOL, help="description pool (one per line)")
    ap.add_argument("--texts", choices=["model", "random"], default="model",
                    help="embed the pool with the model's text tower, or draw random unit directions (same M, D)")
    ap.add_argument("--textspan-n", type=int, default=10_000, help="N, images per head")
    ap.add_argument("--textspan-images", type=int, default=10_000,
                    help="images actually decomposed (rows beyond are resampled; see the docstring)")
    ap.add_argument("--shrinkage", type=float, default=0.1, help="covariance shrinkage of resampled rows")
    ap.add_argument("--textspan-layers", type=int, default=4)
    ap.add_argument("--texts-per-head", type=int, default=20)
    ap.add_argument("--rank", type=int, default=80)
    ap.add_argument("--direct-heads", type=int, default=1_000, help="heads on which the direct form also runs")
    ap.add_argument("--sweep-n", type=int, default=2_000, help="section 4: images of the synthetic store")
    ap.add_argument("--sweep-layers", type=int, default=4, help="section 4: layers (all replaced)")
    ap.add_argument("--sweep-heads", type=int, default=12, help="section 4: heads per layer")
    ap.add_argument("--sweep-width", type=int, default=512, help="section 4: E, the joint space's width")
    ap.add_argument("--sweep-pool", type=int, default=3_498, help="section 4: texts per pool")
    ap.add_argument("--sweep-pools", type=int, default=2, help="section 4: pools of the second sweep")
    ap.add_argument("--sweep-classes", type=int, default=1_000, help="section 4: classes of the classifier")
    ap.add_argument("--sweep-k", type=int, nargs="+", default=[10, 20, 30, 40, 50, 60],
                    help="section 4: the texts per head K of the sweep")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    release_freed_memory()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, repeats {args.repeats} "
          f"(median), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; ratios from "
          f"{'wall' if device.type == 'cuda' else 'process CPU'} seconds")
    ok = True
    models = {name: model_of(name, device) for name in args.models
              if {"reference", "overhead"} & set(args.sections)}
    if "reference" in args.sections:
        print("1. decomposition vs reference (B, T, T, H, D) algorithm")
        for name, model in models.items():
            ok &= bench_reference(model, name, args.batch, args, device)
    if "overhead" in args.sections:
        print("2. decomposition overhead vs a plain image forward")
        for name, model in models.items():
            bench_overhead(model, name, args.batch, args, device)
    models.clear()
    if "textspan" in args.sections:
        print("3. TEXTSPAN covariance vs direct form (ViT-B/32)")
        ok &= bench_textspan(args, device)
    if "sweep" in args.sections:
        print("4. TEXTSPAN K sweep vs one TEXTSPAN run at the largest K (synthetic store, CPU)")
        ok &= bench_sweep(args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
