"""Rule script: verify the shard files of an image set against their completion records and the image list, and
join them as one file of HDF5 virtual datasets."""

import pandas as pd

from clip_interp.decomposition.store import gather_shards
from clip_interp.workflow import run_rule


def main(smk, log):
    keys = pd.read_parquet(smk.input.table, columns=["key"])["key"].tolist()
    gather_shards(list(smk.input.parts), smk.output[0], image_keys=keys, shard_size=smk.params.shard_size)
    log.info("gathered %d shards into %s", len(smk.input.parts), smk.output[0])


run_rule(snakemake, main)  # noqa: F821
