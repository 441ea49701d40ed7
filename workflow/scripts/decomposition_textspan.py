"""Rule script: TEXTSPAN for every head of the last layers, the head-cards figure and the reconstruction check."""

import pandas as pd

from clip_interp.decomposition.classifier import Ablation, ablation_accuracies
from clip_interp.decomposition.data import read_description_pool
from clip_interp.decomposition.figures import head_cards
from clip_interp.decomposition.steps import load_tensor, textspan_layers
from clip_interp.decomposition.store import DecompositionStore
from clip_interp.decomposition.textspan import reconstruction_accuracy, textspan_heads, textspan_table
from clip_interp.io import write_parquet
from clip_interp.workflow import run_rule


def main(smk, log):
    p = smk.params.textspan
    store = DecompositionStore(smk.input.store)
    pool = read_description_pool(smk.input.pool).texts
    layers = textspan_layers(store.n_layers, p["n_layers"])
    log.info("TEXTSPAN: layers %s x %d heads, %d texts, K = %d, rank %d, %d images", layers, store.n_heads,
             len(pool), p["texts_per_head"], p["rank"], store.n)
    spans = textspan_heads(store, load_tensor(smk.input.texts), layers, p["texts_per_head"], p["rank"])
    table = textspan_table(spans, pool)
    table["head_variance"] = [spans[(layer, head)].total_variance
                              for layer, head in zip(table["layer"], table["head"])]
    classifier = load_tensor(smk.input.classifier)
    reconstructed = reconstruction_accuracy(store, spans, classifier, store.labels)
    before = Ablation.layers(store.n_layers, store.n_heads, attention=range(1, layers[0]), name="before_textspan")
    references = ablation_accuracies(store, classifier, store.labels,
                                     [Ablation.none(store.n_layers, store.n_heads), before])
    check = pd.DataFrame([
        {"condition": "no ablation", "accuracy": float(references["accuracy"].iloc[0])},
        {"condition": (f"attention layers 1..{layers[0] - 1} mean-ablated" if layers[0] > 1 else
                       "nothing mean-ablated (TEXTSPAN covers every layer)"),
         "accuracy": float(references["accuracy"].iloc[1])},
        {"condition": f"and the heads of layers {layers[0]}..{layers[-1]} replaced by their TEXTSPAN reconstruction",
         "accuracy": reconstructed},
    ])
    check["texts_per_head"], check["rank"], check["n_images"] = p["texts_per_head"], p["rank"], store.n
    log.info("reconstruction check: %s", check[["condition", "accuracy"]].to_dict("records"))
    meta = {"model": smk.wildcards.model, "layers": layers, **p}
    write_parquet(table, smk.output.table, metadata=meta)
    write_parquet(check, smk.output.reconstruction, metadata=meta)
    head_cards(table, [smk.output.png, smk.output.pdf], p["cards_texts"],
               f"{smk.wildcards.model}: TEXTSPAN texts per head (share of the head's variance)")


run_rule(snakemake, main)  # noqa: F821
