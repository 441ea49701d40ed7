"""Rule script: per-head nearest neighbours for text and image queries under both similarities, and the image
grids of the configured one."""

import numpy as np
import pandas as pd
from PIL import Image

from clip_interp.decomposition.figures import neighbour_grids
from clip_interp.decomposition.neighbours import configured_queries, file_head_terms, neighbour_table
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
    bad = [row for row in p["image_queries"] if not isinstance(row, str) and row >= store.n]
    if bad:
        raise InputError(f"`decomposition.neighbours.image_queries` has rows {bad}, but the classification set has "
                         f"{store.n} images (rows 0..{store.n - 1}); fix the list")
    files = [entry for entry in p["image_queries"] if isinstance(entry, str)]
    model = load_model(smk.params.model, smk.params.device) if p["text_queries"] or files else None
    texts = encode_pool(model, p["text_queries"], smk.params.batch_size) if p["text_queries"] else None
    file_terms = file_head_terms(model, files, store.convention) if files else None
    queries = configured_queries(store, p["text_queries"], texts, p["image_queries"], file_terms)
    table = neighbour_table(store, heads, queries, p["k"], similarity=p["similarity"])
    table["key"] = [store.keys[row] for row in table["row"]]
    log.info("%d heads x %d queries (%d image files outside the set), k = %d, similarities %s; drawn: %s",
             len(heads), len(queries), len(files), p["k"], sorted(table["similarity"].unique()), p["similarity"])
    write_parquet(table, smk.output.table, metadata={"model": smk.wildcards.model, "heads": [list(h) for h in heads],
                                                     "similarity": p["similarity"], "convention": store.convention})
    drawn = table[table["configured"]]
    paths = dict(zip(images["key"], images["path"]))
    pictures = {row: np.asarray(Image.open(paths[store.keys[row]]).convert("RGB")) for row in set(drawn["row"])}
    neighbour_grids(drawn, pictures, [smk.output.png, smk.output.pdf],
                    f"{smk.wildcards.model}: images of largest head contribution along each query "
                    f"({p['similarity']})")


run_rule(snakemake, main)  # noqa: F821
