"""Rule script: join the shard files of an image set as one file of HDF5 virtual datasets."""

from clip_interp.decomposition.store import gather_shards
from clip_interp.workflow import run_rule


def main(smk, log):
    gather_shards(list(smk.input.parts), smk.output[0])
    log.info("gathered %d shards into %s", len(smk.input.parts), smk.output[0])


run_rule(snakemake, main)  # noqa: F821
