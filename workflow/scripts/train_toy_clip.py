"""Rule script: train the demo's toy CLIP on the synthetic benchmark."""

from pathlib import Path

from clip_interp.demo.toy_clip import train_toy_clip
from clip_interp.workflow import run_rule


def main(smk, log):
    p = smk.params.toy_clip
    metrics = train_toy_clip(Path(smk.input.valse).parent, Path(smk.output.checkpoint).parent, epochs=p["epochs"],
                             batch_size=p["batch_size"], lr=p["lr"], seed=p["seed"], threads=smk.threads, log=log.info)
    log.info("metrics: %s", metrics)


run_rule(snakemake, main)  # noqa: F821
