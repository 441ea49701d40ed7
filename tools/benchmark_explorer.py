"""Latency of the explorer's five analyses (clip_interp.heads.analyses) on a large index.

The model is a random-init open_clip model (default ViT-B-32, no download); the index holds random contributions
of the right shape ((N, 4 layers, H, E) float32, N = 10,000 by default) with random property labels, so it
measures the search, not the workflow. Every analysis runs the query image (or text) through the real model.
Times count from after the model is loaded: the first call of each analysis (its text embedding, and for the
property search the summed contributions of the property's heads, are then computed and cached) and the median
of the repeated calls after it, as wall-clock and as process CPU seconds (CPU seconds over the threads, which
other jobs on a shared machine do not inflate; with 1 thread they bound the wall time of an idle core). Run:

    python3 tools/benchmark_explorer.py [--model ViT-B-32] [--images 10000] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import pandas as pd
import torch
from PIL import Image

from clip_interp.heads import analyses
from clip_interp.heads.index import HeadIndex, head_norms
from clip_interp.models import load_model

PROPERTIES = ("colours", "shapes", "animals", "people", "locations", "textures", "objects", "text")


def synthetic_index(model, n_images: int, n_layers: int, seed: int) -> HeadIndex:
    """An index of ``n_images`` random contributions of the model's last ``n_layers`` layers, randomly labelled."""
    rng = np.random.default_rng(seed)
    vision = model.vision
    layers = list(range(vision.n_layers - n_layers + 1, vision.n_layers + 1))
    width = vision.proj.shape[1]
    contributions = rng.standard_normal((n_images, n_layers, vision.n_heads, width), dtype=np.float32)
    labels = pd.DataFrame([{"layer": layer, "head": head, "label": PROPERTIES[int(rng.integers(len(PROPERTIES)))],
                            "confidence": 1.0, "texts": [], "labeller": "taxonomy"}
                           for layer in layers for head in range(vision.n_heads)])
    images = pd.DataFrame({"key": [f"img{i:05d}" for i in range(n_images)],
                           "path": [f"/synthetic/img{i:05d}.png" for i in range(n_images)]})
    return HeadIndex(model_id=model.spec["name"], spec=model.spec, root=None, layers=layers,
                     n_layers=vision.n_layers, n_heads=vision.n_heads, contributions=contributions,
                     norms=head_norms(contributions), images=images, textspan=pd.DataFrame(),
                     labels={"taxonomy": labels}, default_labeller="taxonomy", scores=None,
                     manifest={"convention": "per_component"}, _model=model)


def timed(call, repeats: int) -> tuple[float, float, float, float]:
    """Wall and process-CPU seconds of the first call, and the medians of ``repeats`` further calls."""
    def once():
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        return time.perf_counter() - wall, time.process_time() - cpu

    first_wall, first_cpu = once()
    walls, cpus = zip(*(once() for _ in range(repeats)))
    return first_wall, first_cpu, statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture (random init)")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--layers", type=int, default=4, help="analysed layers (the last ones)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model({"backend": "open_clip", "name": args.model, "random_init": True, "seed": 0}, "cpu")
    index = synthetic_index(model, args.images, args.layers, seed=0)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    layer, head, prop = index.layers[-1], 0, index.label_table()["label"].iloc[0]
    calls = {
        "(a) property neighbours": lambda: analyses.property_neighbours(index, image, prop, args.k),
        "(b) topic map, one head": lambda: analyses.head_topic_map(index, image, "a photo of a dog.", layer, head),
        "(b) topic map, all heads": lambda: analyses.head_topic_map(index, image, "a photo of a dog.",
                                                                    *analyses.ALL_HEADS),
        "(c) contrastive maps": lambda: analyses.contrastive_maps(index, image, "a dog.", "a cat.", layer, head),
        "(d) head image neighbours": lambda: analyses.head_image_neighbours(index, image, layer, head, args.k),
        "(e) head text neighbours": lambda: analyses.head_text_neighbours(index, "a photo of a dog.", layer, head,
                                                                          args.k),
    }
    print(f"{args.model} (random init), index of {args.images:,} images x {args.layers} layers x {index.n_heads} heads "
          f"x {index.contributions.shape[-1]} (float32, {index.contributions.nbytes / 2**30:.2f} GiB), "
          f"{args.threads} threads, k = {args.k}")
    print(f"load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'analysis':28s} {'first: wall s':>14s} {'cpu s':>7s} {'median: wall s':>15s} {'cpu s':>7s}")
    for name, call in calls.items():
        first_wall, first_cpu, wall, cpu = timed(call, args.repeats)
        print(f"{name:28s} {first_wall:14.3f} {first_cpu:7.3f} {wall:15.3f} {cpu:7.3f}")

if __name__ == "__main__":
    main()
