"""Rule script: TEXTSPAN's reconstruction accuracy against the texts per head K, for every configured text pool,
beside the top-K principal components and K random pool texts (table and figure)."""

import time

from clip_interp.decomposition.figures import accuracy_vs_texts_per_head
from clip_interp.decomposition.steps import load_tensor, textspan_layers
from clip_interp.decomposition.store import DecompositionStore
from clip_interp.decomposition.textspan_sweep import check_sweep_sizes, textspan_sweep
from clip_interp.io import write_parquet
from clip_interp.workflow import run_rule


def main(smk, log):
    p = smk.params.textspan
    ks, seed = p["sweep"]["texts_per_head"], p["sweep"]["seed"]
    store = DecompositionStore(smk.input.store)
    pools = {name: load_tensor(smk.input[name]) for name in smk.params.pools}
    check_sweep_sizes(ks, p["rank"], {name: len(texts) for name, texts in pools.items()})
    layers = textspan_layers(store.n_layers, p["n_layers"])
    log.info("TEXTSPAN sweep: layers %s x %d heads, K in %s, rank %d, pools %s, %d images", layers, store.n_heads,
             ks, p["rank"], {name: len(texts) for name, texts in pools.items()}, store.n)
    start = time.perf_counter()
    table = textspan_sweep(store, pools, load_tensor(smk.input.classifier), store.labels, layers, ks, p["rank"],
                           seed=seed)
    log.info("done in %.1f s; accuracy at K = %s:", time.perf_counter() - start, sorted(set(ks)))
    for (method, pool), rows in table.fillna({"pool": "-"}).groupby(["method", "pool"], sort=False):
        log.info("  %s, pool %s: %s", method, pool, [round(a, 4) for a in rows["accuracy"]])
    table.insert(0, "model", smk.wildcards.model)
    write_parquet(table, smk.output.table, metadata={"model": smk.wildcards.model, "layers": layers, **p})
    accuracy_vs_texts_per_head(table, [smk.output.png, smk.output.pdf],
                               f"{smk.wildcards.model}: reconstruction accuracy against texts per head "
                               f"(layers {layers[0]}..{layers[-1]} replaced, earlier layers mean-ablated)")


run_rule(snakemake, main)  # noqa: F821
