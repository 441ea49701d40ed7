"""Rule script: extract the Waterbirds tarball into a folder (written under a temporary name, then renamed)."""

from clip_interp.decomposition.data import extract_waterbirds
from clip_interp.workflow import run_rule


def main(smk, log):
    root = extract_waterbirds(smk.input.archive, smk.output[0])
    log.info("extracted %s; dataset folder %s", smk.input.archive, root)


run_rule(snakemake, main)  # noqa: F821
