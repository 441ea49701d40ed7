"""Rule script: Waterbirds group accuracies before and after mean-ablating the chosen heads (both ablations)."""

import pandas as pd

from clip_interp.decomposition.figures import waterbirds_groups
from clip_interp.decomposition.spurious import auto_heads, listed_heads, paper_heads, spurious_table
from clip_interp.decomposition.steps import load_tensor, resolve_heads
from clip_interp.decomposition.store import DecompositionStore
from clip_interp.errors import InputError
from clip_interp.head_selection import read_published_heads
from clip_interp.io import write_parquet
from clip_interp.workflow import run_rule


def chosen_heads(smk, store) -> pd.DataFrame:
    setting = smk.params.heads
    if setting == "auto":
        return auto_heads(pd.read_parquet(smk.input.textspan), load_tensor(smk.input.texts),
                          load_tensor(smk.input.places), smk.params.n_heads)
    if setting == "paper":
        return paper_heads(read_published_heads(smk.input.paper_heads), smk.wildcards.model, smk.params.model,
                           store.n_layers, store.n_heads)
    return listed_heads(resolve_heads(setting, store.n_layers, store.n_heads, smk.params.heads_key))


def main(smk, log):
    store = DecompositionStore(smk.input.store)
    images = pd.read_parquet(smk.input.table)
    if images["key"].tolist() != store.keys:
        raise InputError(f"{smk.input.store} and {smk.input.table} list different images; re-run the shards")
    heads = chosen_heads(smk, store)
    log.info("heads mean-ablated (%s): %s", smk.params.heads_key, heads.to_dict("records"))
    pairs = list(zip(heads["layer"].astype(int), heads["head"].astype(int)))
    table = spurious_table(store, load_tensor(smk.input.classifier), images["label"].to_numpy(),
                           images["place"].to_numpy(), pairs, configured=smk.params.ablation,
                           kept_layers=smk.params.kept_layers)
    log.info("group accuracies:\n%s", table.to_string())
    meta = {"model": smk.wildcards.model, "class_names": list(smk.params.class_names),
            "heads": [list(p) for p in pairs], "heads_setting": smk.params.heads, "ablation": smk.params.ablation,
            "kept_layers": smk.params.kept_layers}
    write_parquet(table, smk.output.table, metadata=meta)
    write_parquet(heads, smk.output.heads, metadata=meta)
    waterbirds_groups(table, smk.params.class_names, [smk.output.png, smk.output.pdf],
                      f"{smk.wildcards.model}: Waterbirds groups ({store.n} images)", store.n_layers)


run_rule(snakemake, main)  # noqa: F821
