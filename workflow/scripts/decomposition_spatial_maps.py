"""Rule script: spatial maps (per head, per layer, whole model) of configured images on configured texts, and
their figure."""

import numpy as np
import pandas as pd

from clip_interp.decomposition.figures import spatial_map_grids
from clip_interp.decomposition.spatial import file_spatial_maps, heads_to_draw, spatial_table
from clip_interp.decomposition.steps import encode_pool, resolve_heads
from clip_interp.images import centre_view, open_image
from clip_interp.io import write_parquet
from clip_interp.models import load_model
from clip_interp.workflow import run_rule


def main(smk, log):
    p = smk.params.spatial_maps
    images = pd.read_parquet(smk.input.table)
    paths = [entry if isinstance(entry, str) else images["path"].iloc[entry] for entry in p["images"]]
    names = [entry if isinstance(entry, str) else images["key"].iloc[entry] for entry in p["images"]]
    model = load_model(smk.params.model, smk.params.device)
    texts = encode_pool(model, p["texts"], smk.params.batch_size)
    maps = file_spatial_maps(model, paths, texts, convention=smk.params.convention,
                             batch_size=smk.params.image_batch_size)
    table = spatial_table(maps, names, p["texts"])
    n_layers, n_heads = maps.heads.shape[1:3]
    chosen = p["heads"] if p["heads"] == "auto" else resolve_heads(p["heads"], n_layers, n_heads,
                                                                   "decomposition.spatial_maps.heads")
    heads = {(image, text): heads_to_draw(table, image, text, chosen, n_layers, p["layers"], p["n_heads"])
             for image in names for text in p["texts"]}
    log.info("%d images x %d texts on a %dx%d patch grid; heads drawn: %s", len(names), len(p["texts"]),
             *maps.grid, heads)
    write_parquet(table, smk.output.table, metadata={"model": smk.wildcards.model, "convention": smk.params.convention,
                                                     "grid": list(maps.grid), "units": "divided by ||e||"})
    pictures = {name: np.asarray(centre_view(open_image(path), model.image_size)) for name, path in zip(names, paths)}
    spatial_map_grids(table, pictures, heads, p["layers"], [smk.output.png, smk.output.pdf],
                      f"{smk.wildcards.model}: patch maps of the image embedding on each text, divided by ||e|| "
                      "(layers numbered from 1; the paper's layer l-1)")


run_rule(snakemake, main)  # noqa: F821
