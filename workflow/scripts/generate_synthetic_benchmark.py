"""Rule script: the synthetic existence benchmark of the offline demo."""

from pathlib import Path

from clip_interp.synthetic import generate_existence_benchmark
from clip_interp.workflow import run_rule


def main(smk, log):
    p = smk.params.synthetic
    summary = generate_existence_benchmark(Path(smk.output.valse).parent, n_eval=p["n_eval"], n_train=p["n_train"],
                                           image_size=p["image_size"], seed=p["seed"])
    log.info("summary: %s", summary)


run_rule(snakemake, main)  # noqa: F821
