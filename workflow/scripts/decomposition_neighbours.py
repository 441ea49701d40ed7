"""Rule script: per-head nearest neighbours for text and image queries, and their image grids."""

import numpy as np
import pandas as pd
from PIL import Image

from clip_interp.decomposition.figures import neighbour_grids
from clip_interp.decomposition.neighbours import head_neighbours, image_query
from clip_interp.decomposition.steps import auto_neighbour_heads, encode_pool, resolve_heads
from clip_interp.decomposition.store import DecompositionStore
from clip_interp.errors import InputError
from clip_interp.io import write_parquet
from clip_interp.models import load_model
from clip_interp.workflow import run_rule


def main(smk, log):
    p = smk.params.neighbours
    store = DecompositionStore(smk.input.store)
    images = pd.read_parquet(smk.input.table)
    if p["heads"] == "auto":
        heads = auto_neighbour_heads(pd.read_parquet(smk.input.textspan))
    else:
        heads = resolve_heads(p["heads"], store.n_layers, store.n_heads, "decomposition.neighbours.heads")
    bad = [row for row in p["image_queries"] if row >= store.n]
    if bad:
        raise InputError(f"`decomposition.neighbours.image_queries` has rows {bad}, but the classification set has "
                         f"{store.n} images (rows 0..{store.n - 1}); fix the list")
    texts = encode_pool(load_model(smk.params.model, smk.params.device), p["text_queries"],
                        smk.params.batch_size) if p["text_queries"] else None
    parts = []
    for layer, head in heads:
        queries = [(f"text: {t}", texts[i], None) for i, t in enumerate(p["text_queries"])]
        queries += [(f"image: {store.keys[row]}", image_query(store, layer, head, row), row)
                    for row in p["image_queries"]]
        for name, direction, exclude in queries:
            found = head_neighbours(store, layer, head, direction, p["k"], exclude=exclude)
            found.insert(0, "query", name)
            found.insert(0, "head", head)
            found.insert(0, "layer", layer)
            parts.append(found)
    table = pd.concat(parts, ignore_index=True)
    table["key"] = [store.keys[row] for row in table["row"]]
    log.info("%d heads x %d queries, k = %d", len(heads), len(p["text_queries"]) + len(p["image_queries"]), p["k"])
    write_parquet(table, smk.output.table, metadata={"model": smk.wildcards.model, "heads": [list(h) for h in heads]})
    paths = dict(zip(images["key"], images["path"]))
    pictures = {row: np.asarray(Image.open(paths[store.keys[row]]).convert("RGB")) for row in set(table["row"])}
    neighbour_grids(table, pictures, [smk.output.png, smk.output.pdf],
                    f"{smk.wildcards.model}: images of largest head contribution along each query")


run_rule(snakemake, main)  # noqa: F821
