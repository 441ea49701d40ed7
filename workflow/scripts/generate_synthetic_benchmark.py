"""Rule script: the synthetic existence benchmark of the offline demo (and the decomposition study's sets)."""

from pathlib import Path

from clip_interp.demo.decomposition_sets import append_train_records, generate_decomposition_sets
from clip_interp.demo.negation_benchmark import generate_existence_benchmark
from clip_interp.workflow import run_rule


def main(smk, log):
    p = smk.params.synthetic
    out = Path(smk.output.valse).parent
    summary = generate_existence_benchmark(out, n_eval=p["n_eval"], n_train=p["n_train"],
                                           image_size=p["image_size"], seed=p["seed"])
    log.info("summary: %s", summary)
    if smk.params.decomposition:
        d = p["decomposition"]
        sets, records = generate_decomposition_sets(
            Path(smk.output.segmentation).parent, out / "images", n_classification=d["n_classification"],
            n_waterbirds_train=d["n_waterbirds_train"], n_waterbirds_test=d["n_waterbirds_test"],
            spurious_correlation=d["spurious_correlation"], camouflage=d["camouflage"], image_size=p["image_size"],
            seed=p["seed"])
        append_train_records(smk.output.train, records)
        log.info("decomposition sets: %s; %d Waterbirds-like training pairs added to %s", sets, len(records),
                 smk.output.train)


run_rule(snakemake, main)  # noqa: F821
