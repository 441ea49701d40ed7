"""Rule script: Waterbirds group accuracies before and after mean-ablating the chosen heads."""

import pandas as pd

from clip_interp.decomposition.figures import waterbirds_groups
from clip_interp.decomposition.spurious import select_heads_from_table, spurious_table
from clip_interp.decomposition.steps import load_tensor, resolve_heads
from clip_interp.decomposition.store import DecompositionStore
from clip_interp.errors import InputError
from clip_interp.io import write_parquet
from clip_interp.workflow import run_rule


def chosen_heads(smk, store, log) -> pd.DataFrame:
    if smk.params.heads == "auto":
        heads = select_heads_from_table(pd.read_parquet(smk.input.textspan), load_tensor(smk.input.texts),
                                        load_tensor(smk.input.places), smk.params.n_heads)
        heads["selected_by"] = "textspan_place_descriptions"
        return heads
    pairs = resolve_heads(smk.params.heads, store.n_layers, store.n_heads, "decomposition.spurious.heads")
    return pd.DataFrame({"layer": [layer for layer, _ in pairs], "head": [head for _, head in pairs],
                         "score": float("nan"), "selected_by": "config"})


def main(smk, log):
    store = DecompositionStore(smk.input.store)
    images = pd.read_parquet(smk.input.table)
    if images["key"].tolist() != store.keys:
        raise InputError(f"{smk.input.store} and {smk.input.table} list different images; re-run the shards")
    heads = chosen_heads(smk, store, log)
    log.info("heads mean-ablated: %s", heads[["layer", "head", "score"]].to_dict("records"))
    pairs = list(zip(heads["layer"].astype(int), heads["head"].astype(int)))
    table = spurious_table(store, load_tensor(smk.input.classifier), images["label"].to_numpy(),
                           images["place"].to_numpy(), pairs)
    log.info("group accuracies:\n%s", table.to_string())
    meta = {"model": smk.wildcards.model, "class_names": list(smk.params.class_names),
            "heads": [list(p) for p in pairs]}
    write_parquet(table, smk.output.table, metadata=meta)
    write_parquet(heads, smk.output.heads, metadata=meta)
    waterbirds_groups(table, smk.params.class_names, [smk.output.png, smk.output.pdf],
                      f"{smk.wildcards.model}: Waterbirds groups ({store.n} images)")


run_rule(snakemake, main)  # noqa: F821
