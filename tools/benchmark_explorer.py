"""Resident memory and latency of the explorer's five analyses (clip_interp.heads.analyses) on a large index, with
the memory-mapped float16 index (searched with exact float32 re-scoring) beside the float32 index held in memory.

The model is a random-init open_clip model (default ViT-L-14, no download). The index is synthetic: N random
contributions (default 50,000, ImageNet's validation set) of the last 4 layers x H heads x E dims, drawn N(0, 0.01^2)
per value, with every 1,000th row duplicated into the next (exact ties) and randomly labelled heads (8 properties,
whose summed heads the files hold, as the workflow writes them; a 6-head group they do not hold is timed too).
The files are written under ``--dir`` (default /tmp) by the workflow's writer
(:func:`clip_interp.heads.vectors.write_index_files`) and deleted at the end (unless ``--keep``).

Each configuration runs in its own process (so that its peak resident memory, VmHWM, is its own), with one torch
and BLAS thread by default:

* ``mapped``: the index files memory-mapped (the explorer's path), at ``--images``; the files are dropped from the
  page cache first (``posix_fadvise DONTNEED``), so the first call of each search reads from disk;
* ``memory``: the float32 index held in memory and searched as before this change (summed property matrices cached,
  float32 cosines over every row), at ``--compare-images`` (where it fits), beside ``mapped`` at the same size.

Per analysis it prints the first call (wall seconds; it includes the query's forward, the text's embedding, and for
the in-memory path the property's summed matrix) and the median of ``--repeats`` further calls on the same query
(the query's contributions are then cached: the median is the search, not the model), and the search alone
(median, from the query vector). Then the peak and current resident memory, and the checks: for every search and
several queries (indexed rows, with exact duplicates, and random vectors) the top k of the mapped search equal the
exact search over every row (float64 scores of the float32 values) and the float32 search as before, rank for rank.
The machine's load average is printed beside the figures. Run:

    PYTHONPATH=workflow/scripts python3 tools/benchmark_explorer.py [--images 50000] [--compare-images 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROPERTIES = ("colours", "shapes", "animals", "people", "locations", "textures", "objects", "text")
TEXT = "a photo of a dog."
SCALE = 0.01
UNLISTED = 6  # heads of a group whose sum the files do not hold (e.g. the app's groups): summed head by head
DUPLICATE_EVERY = 1000


def status() -> dict[str, float]:
    """VmHWM (peak resident), VmRSS, RssAnon and RssFile of this process, in GiB."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[name] = int(value.split()[0]) / 2**20
    return out


def synthetic_batches(n_images: int, shape: tuple[int, int, int], seed: int, batch_size: int = 1024):
    """Batches ``(rows, (b, L_a, H, E) float32)`` of the synthetic contributions (see the module docstring)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for start in range(0, n_images, batch_size):
        rows = slice(start, min(start + batch_size, n_images))
        batch = rng.standard_normal((rows.stop - rows.start, *shape), dtype=np.float32) * np.float32(SCALE)
        for row in range(start, rows.stop - 1):
            if row % DUPLICATE_EVERY == 0:
                batch[row + 1 - start] = batch[row - start]
        yield rows, batch


def write_files(folder: Path, n_images: int, shape: tuple[int, int, int], layers: list[int], seed: int) -> dict:
    """The index files of the synthetic index, with each property's summed heads (as the workflow writes them)."""
    from clip_interp.heads.vectors import INDEX_FILES, write_index_files

    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: str(folder / file) for name, (file, _) in INDEX_FILES.items()}
    labels = _labels(layers, shape[1], seed)
    groups = [[(layers.index(int(r.layer)), int(r.head)) for r in heads.itertuples()]
              for _, heads in labels.groupby("label", sort=True) if len(heads) > 1]
    return write_index_files(synthetic_batches(n_images, shape, seed), (n_images, *shape), paths, groups=groups)


def _labels(layers, n_heads: int, seed: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame([{"layer": layer, "head": head, "label": PROPERTIES[int(rng.integers(len(PROPERTIES)))],
                          "confidence": 1.0, "texts": [], "labeller": "taxonomy"}
                         for layer in layers for head in range(n_heads)])


def build_index(model, vectors, layers, seed: int):
    import pandas as pd

    from clip_interp.heads.index import HeadIndex

    n = vectors.n_images
    images = pd.DataFrame({"key": [f"img{i:05d}" for i in range(n)], "path": [f"/synthetic/img{i:05d}.png"
                                                                              for i in range(n)]})
    return HeadIndex(model_id=model.spec["name"], spec=model.spec, root=Path("/synthetic"), layers=layers,
                     n_layers=model.vision.n_layers, n_heads=model.vision.n_heads, vectors=vectors, images=images,
                     textspan=pd.DataFrame(), labels={"taxonomy": _labels(layers, model.vision.n_heads, seed)},
                     default_labeller="taxonomy", scores=None, manifest={"convention": "uniform"}, _model=model)


# --------------------------------------------------------------------------- the float32 search as before


def float32_scores(vectors, positions, query, cache: dict | None = None):
    """The scores of the search as it was (float32 in memory): the heads' contributions summed in float32, cosine
    ``x . q / ||q|| / ||x||`` in float32 over every row (torch); the summed matrix cached per group if ``cache``."""
    import numpy as np
    import torch

    key = tuple(positions)
    if cache is not None and key in cache:
        total, norms = cache[key]
    else:
        total = torch.zeros(vectors.n_images, vectors.width)
        for position in positions:
            total += torch.from_numpy(np.asarray(vectors.exact[position]))
        norms = total.norm(dim=1)
        if cache is not None:
            cache[key] = (total, norms)
    query = torch.as_tensor(np.asarray(query, dtype=np.float32))
    return ((total @ (query / query.norm())) / norms.clamp_min(1e-30) * (norms > 0)).double()


def float32_top_k(vectors, positions, query, k: int, cache: dict | None = None) -> list[int]:
    import torch

    return torch.sort(-float32_scores(vectors, positions, query, cache), stable=True).indices[:k].tolist()


# --------------------------------------------------------------------------- one configuration


def timed(call, repeats: int) -> tuple[float, float]:
    """Wall seconds of the first call and the median of ``repeats`` further calls."""
    def once():
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    first = once()
    return first, statistics.median(once() for _ in range(repeats))


def _drop_page_cache(vectors) -> None:
    for mapped in vectors.mapped.values():
        with open(mapped.path, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _open(args, model, layers):
    import numpy as np

    from clip_interp.heads.vectors import HeadVectors, open_index_files

    if args.path == "mapped":
        description = json.loads(Path(args.description).read_text())
        vectors = open_index_files(description, Path("/"), n_images=args.images, n_layers=len(layers),
                                   n_heads=model.vision.n_heads, manifest=Path(args.description))
        _drop_page_cache(vectors)
        return vectors
    shape = (len(layers), model.vision.n_heads, model.vision.proj.shape[1])
    values = np.empty((*shape[:2], args.images, shape[2]), dtype=np.float32)
    for rows, batch in synthetic_batches(args.images, shape, args.seed):
        values[:, :, rows] = batch.transpose(1, 2, 0, 3)
    return HeadVectors.in_memory(values)


def _calls(args, index, image, layer: int, head: int, prop: str, heads, cache: dict):
    """The five analyses as the explorer runs them (``mapped``), or with the search as before (``memory``)."""
    from clip_interp.heads import analyses

    positions = [(index.layer_column(lay), h) for lay, h in heads]
    column = index.layer_column(layer)
    if args.path == "mapped":
        searches = {
            "(a) property neighbours": lambda: analyses.property_neighbours(index, image, prop, args.k),
            "(d) head image neighbours": lambda: analyses.head_image_neighbours(index, image, layer, head, args.k),
            "(e) head text neighbours": lambda: analyses.head_text_neighbours(index, TEXT, layer, head, args.k),
        }
    else:
        def property_search():
            query = analyses.query_head_contributions(index, image)
            return float32_top_k(index.vectors, positions, query[[p[0] for p in positions], [p[1] for p in positions]]
                                 .sum(0), args.k, cache)

        searches = {
            "(a) property neighbours": property_search,
            "(d) head image neighbours": lambda: float32_top_k(
                index.vectors, [(column, head)], analyses.query_head_contributions(index, image)[column, head], args.k),
            "(e) head text neighbours": lambda: float32_top_k(index.vectors, [(column, head)],
                                                              analyses.text_embedding(index, TEXT), args.k),
        }
    maps = {
        "(b) topic map, one head": lambda: analyses.head_topic_map(index, image, TEXT, layer, head),
        "(b) topic map, all heads": lambda: analyses.head_topic_map(index, image, TEXT, *analyses.ALL_HEADS),
        "(c) contrastive maps, all heads": lambda: analyses.contrastive_maps(index, image, "a dog.", "a cat.",
                                                                             *analyses.ALL_HEADS),
    }
    return searches, maps


def unlisted_group(index) -> list[tuple[int, int]]:
    """The first head of each of ``UNLISTED`` analysed-layer/head pairs across layers: a group no property forms."""
    return [(index.layers[i % len(index.layers)], i // len(index.layers)) for i in range(UNLISTED)]


def _search_alone(args, index, image, layer: int, head: int, heads, cache: dict) -> dict[str, float]:
    """Median seconds of the search alone (query vectors computed beforehand)."""
    from clip_interp.heads import analyses

    query = analyses.query_head_contributions(index, image)
    column = index.layer_column(layer)
    group = query[[index.layer_column(lay) for lay, _ in heads], [h for _, h in heads]].sum(0)
    text = analyses.text_embedding(index, TEXT)
    jobs = {"(a) property neighbours": (heads, group), "(d) head image neighbours": ([(layer, head)],
                                                                                    query[column, head]),
            "(e) head text neighbours": ([(layer, head)], text),
            f"(a) an unlisted group of {UNLISTED} heads": (unlisted_group(index), group)}
    out = {}
    for name, (group_heads, vector) in jobs.items():
        if args.path == "mapped":
            out[name] = timed(lambda: index.top_k(group_heads, vector, args.k), args.repeats)[1]
        else:
            positions = [(index.layer_column(lay), h) for lay, h in group_heads]
            out[name] = timed(lambda: float32_top_k(index.vectors, positions, vector, args.k, cache), args.repeats)[1]
    return out


def _rankings_checked(args, index, image, layer: int, head: int, heads) -> dict:
    """For each search and several queries: do the top k equal the exact search and the float32 search?"""
    import numpy as np

    from clip_interp.heads import analyses

    rng = np.random.default_rng(args.seed + 1)
    vectors = index.vectors
    single = [(index.layer_column(layer), head)]
    group = [(index.layer_column(lay), h) for lay, h in heads]
    queries = {"query image": analyses.query_head_contributions(index, image)[single[0]].numpy(),
               "text": analyses.text_embedding(index, TEXT).numpy(),
               "indexed row with a duplicate": np.asarray(vectors.exact[single[0]][DUPLICATE_EVERY]),
               "random vector": rng.standard_normal(vectors.width).astype(np.float32)}
    duplicated = DUPLICATE_EVERY * max(1, (vectors.n_images - 2) // DUPLICATE_EVERY)   # has a copy in the next row
    group_query = sum(np.asarray(vectors.exact[p][duplicated], dtype=np.float32) for p in group)
    checks = [("(d)/(e) one head", single, name, q) for name, q in queries.items()]
    unlisted = [(index.layer_column(lay), h) for lay, h in unlisted_group(index)]
    checks += [("(a) property group", group, "indexed row with a duplicate", group_query),
               ("(a) property group", group, "random vector", queries["random vector"]),
               ("(a) unlisted group", unlisted, "random vector", queries["random vector"])]
    results = []
    for search, positions, name, query in checks:
        rows, _ = vectors.top_k(positions, query, args.k)
        exact_rows, _ = vectors.brute_force_top_k(positions, query, args.k)
        results.append({"search": search, "query": name, "exact": rows.tolist() == exact_rows.tolist(),
                        "float32": rows.tolist() == float32_top_k(vectors, positions, query, args.k),
                        "rows": rows[:4].tolist()})
    return results


def run_configuration(args) -> None:
    """One configuration (``--path``), in this process; prints a JSON line of its figures."""
    import numpy as np
    import torch
    from PIL import Image

    from clip_interp.models import load_model

    torch.set_num_threads(args.threads)
    model = load_model({"backend": "open_clip", "name": args.model, "random_init": True, "seed": 0}, "cpu")
    after_model = status()
    layers = list(range(model.vision.n_layers - args.layers + 1, model.vision.n_layers + 1))
    start = time.perf_counter()
    vectors = _open(args, model, layers)
    open_s = time.perf_counter() - start
    index = build_index(model, vectors, layers, args.seed)
    labels = index.label_table()
    prop = labels["label"].value_counts().index[0]                     # the largest group
    heads = [(int(r.layer), int(r.head)) for r in labels[labels["label"] == prop].itertuples()]
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    layer, head, cache = layers[-1], 0, {}
    searches, maps = _calls(args, index, image, layer, head, prop, heads, cache)
    latency = {name: timed(call, args.repeats) for name, call in {**searches, **maps}.items()}
    alone = _search_alone(args, index, image, layer, head, heads, cache)
    memory = status()
    checks = _rankings_checked(args, index, image, layer, head, heads) if args.path == "mapped" else []
    print(json.dumps({"path": args.path, "images": args.images, "open_s": open_s, "group": len(heads),
                      "model_rss_gib": after_model["VmRSS"], "memory": memory, "latency": latency,
                      "search_alone": alone, "checks": checks, "load": os.getloadavg(),
                      "shape": list(vectors.exact.shape)}), flush=True)


# --------------------------------------------------------------------------- the driver


def _configuration(args, path: str, images: int, description: Path | None) -> dict:
    command = [sys.executable, __file__, "--run", path, "--images", str(images), "--model", args.model,
               "--layers", str(args.layers), "--threads", str(args.threads), "--repeats", str(args.repeats),
               "--k", str(args.k), "--seed", str(args.seed)]
    if description is not None:
        command += ["--description", str(description)]
    env = {**os.environ, **{name: str(args.threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                                  "MKL_NUM_THREADS")}}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the {path} configuration failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _print(result: dict) -> None:
    memory, shape = result["memory"], result["shape"]
    size = shape[0] * shape[1] * shape[2] * shape[3]
    kind = ("float16 memory-mapped, exact float32 re-scoring" if result["path"] == "mapped"
            else "float32 in memory, searched as before")
    print(f"\n== {kind}: {result['images']:,} images x {shape[0]} layers x {shape[1]} heads x {shape[3]} "
          f"({size * 2 / 2**30:.2f} GiB float16 + {size * 4 / 2**30:.2f} GiB float32 on disk)"
          if result["path"] == "mapped" else
          f"\n== {kind}: {result['images']:,} images x {shape[0]} layers x {shape[1]} heads x {shape[3]} "
          f"({size * 4 / 2**30:.2f} GiB in memory)")
    print(f"load average {', '.join(f'{x:.2f}' for x in result['load'])}; opened in {result['open_s']:.2f} s; "
          f"property group of {result['group']} heads")
    print(f"resident memory: peak (VmHWM) {memory['VmHWM']:.2f} GiB, now {memory['VmRSS']:.2f} GiB "
          f"(anonymous {memory['RssAnon']:.2f}, file-backed {memory['RssFile']:.2f}); the model alone "
          f"{result['model_rss_gib']:.2f} GiB")
    print(f"{'analysis':34s} {'first s':>8s} {'median s':>9s} {'search alone s':>15s}")
    for name, (first, median) in result["latency"].items():
        alone = result["search_alone"].get(name)
        print(f"{name:34s} {first:8.3f} {median:9.3f} {'' if alone is None else f'{alone:15.3f}'}")
    for name, alone in result["search_alone"].items():
        if name not in result["latency"]:
            print(f"{name:34s} {'':8s} {'':9s} {alone:15.3f}")
    for check in result["checks"]:
        print(f"top {check['search']:18s} {check['query']:30s} equal to exact: {check['exact']!s:5s} "
              f"to float32: {check['float32']!s:5s} (first rows {check['rows']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-L-14", help="open_clip architecture (random init)")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--compare-images", type=int, default=10_000,
                        help="size at which the float32 in-memory path runs beside the mapped one (0: not run)")
    parser.add_argument("--layers", type=int, default=4, help="analysed layers (the last ones)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default="/tmp", help="where the index files are written (and deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the index files")
    parser.add_argument("--run", choices=["mapped", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--description", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        args.path = args.run
        run_configuration(args)
        return
    folder = Path(tempfile.mkdtemp(prefix="explorer_index_", dir=args.dir))
    print(f"{args.model} (random init), k = {args.k}, {args.threads} thread(s); files under {folder}; "
          f"free disk {shutil.disk_usage(args.dir).free / 2**30:.1f} GiB; load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    try:
        for images in [args.images] + ([args.compare_images] if args.compare_images else []):
            description = _write(args, folder / str(images), images)
            _print(_configuration(args, "mapped", images, description))
        if args.compare_images:
            _print(_configuration(args, "memory", args.compare_images, None))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def _write(args, folder: Path, images: int) -> Path:
    from clip_interp.models import load_model

    vision = load_model({"backend": "open_clip", "name": args.model, "random_init": True, "seed": 0}, "cpu").vision
    shape = (args.layers, vision.n_heads, vision.proj.shape[1])
    layers = list(range(vision.n_layers - args.layers + 1, vision.n_layers + 1))
    start = time.perf_counter()
    description = write_files(folder, images, shape, layers, args.seed)
    print(f"wrote {images:,} images' index files in {time.perf_counter() - start:.1f} s: "
          + ", ".join(f"{Path(e['path']).name} {e['bytes'] / 2**30:.2f} GiB" for e in description["files"].values()),
          flush=True)
    path = folder / "explorer_index.json"
    path.write_text(json.dumps(description))
    return path


if __name__ == "__main__":
    main()
