"""Rule script: linear probes for 'negated or not' per layer x generic position, from the text cache (no model)."""

from tqdm import tqdm

from clip_interp.io import write_parquet
from clip_interp.negation.positions import GENERIC_NAMES
from clip_interp.negation.probes import plot_probes, probe_features_from_cache, probe_table
from clip_interp.negation.tracing import read_tracing_instances
from clip_interp.plotting import save_figure
from clip_interp.workflow import run_rule


def main(smk, log):
    instances, selection = read_tracing_instances(smk.input.positions, log)
    features = probe_features_from_cache(smk.input.text, instances)
    n_layers = next(iter(features.values()))[0].shape[1]
    with tqdm(total=n_layers * len(GENERIC_NAMES), desc="probes") as progress:
        table = probe_table(features, n_splits=smk.params.n_splits, c=smk.params.C, seed=smk.params.seed,
                            progress=progress)
    for name, part in table.groupby("generic_position", observed=True):
        log.info("%s: accuracy per layer %s; control %s", name, part["accuracy"].round(3).tolist(),
                 part["control_accuracy"].round(3).tolist())
    skipped = {name: len(instances) - int(len(set(f[2]))) for name, f in features.items()}
    meta = {
        "variant": smk.params.variant, "model": smk.wildcards.model, "n_instances": len(instances),
        "n_sentences": 2 * len(instances), "selection": selection, "instances_without_slot": skipped,
        "n_splits": smk.params.n_splits, "C": smk.params.C, "seed": smk.params.seed,
        "probe": "StandardScaler + LogisticRegression (liblinear, L2), GroupKFold by instance; control: labels of a "
                 "random half of the instances swapped",
    }
    write_parquet(table, smk.output.table, meta)
    save_figure(plot_probes(table, smk.wildcards.model, smk.params.variant), [smk.output.png, smk.output.pdf])


run_rule(snakemake, main)  # noqa: F821
