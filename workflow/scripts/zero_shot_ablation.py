"""Rule script: zero-shot accuracy under mean-ablations of components, and accuracy vs ablated attention layers."""

from clip_interp.decomposition.classifier import ablation_accuracies
from clip_interp.decomposition.figures import accuracy_vs_ablated_layers
from clip_interp.decomposition.steps import ablation_set, layers_ablated, load_tensor
from clip_interp.decomposition.store import DecompositionStore
from clip_interp.errors import InputError
from clip_interp.io import write_parquet
from clip_interp.workflow import run_rule


def main(smk, log):
    store = DecompositionStore(smk.input.store)
    if store.labels is None:
        raise InputError(f"{smk.input.store} has no labels; the classification set must be labelled")
    ablations = ablation_set(store.n_layers, store.n_heads, smk.params.paper_rows)
    table = ablation_accuracies(store, load_tensor(smk.input.classifier), store.labels, ablations)
    table["attention_layers_ablated"] = [layers_ablated(name) for name in table["ablation"]]
    log.info("zero-shot accuracy: %s", dict(zip(table["ablation"], table["accuracy"].round(4))))
    write_parquet(table, smk.output.table, metadata={"model": smk.wildcards.model, "convention": store.convention,
                                                     "n_images": store.n})
    accuracy_vs_ablated_layers(table, [smk.output.png, smk.output.pdf],
                               f"{smk.wildcards.model}: mean-ablation ({store.n} images)")


run_rule(snakemake, main)  # noqa: F821
