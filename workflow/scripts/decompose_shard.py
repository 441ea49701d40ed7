"""Rule script: decompose the images of one shard of an image set and write its HDF5 part."""

import pandas as pd

from clip_interp.decomposition.store import shard_rows, write_decomposition
from clip_interp.models import load_model
from clip_interp.workflow import run_rule


def main(smk, log):
    table = pd.read_parquet(smk.input.table)
    rows = shard_rows(len(table), smk.params.shard_size, int(smk.wildcards.shard))
    part = table.iloc[rows]
    model = load_model(smk.params.model, smk.params.device)
    log.info("shard %s: rows %d..%d of %d, device %s", smk.wildcards.shard, rows.start, rows.stop - 1, len(table),
             model.device)
    write_decomposition(model, part["path"].tolist(), part["key"].tolist(), smk.output[0],
                        model_id=smk.wildcards.model, convention=smk.params.convention, dtype=smk.params.dtype,
                        batch_size=smk.params.batch_size, labels=part["label"].tolist(),
                        metadata={"shard": int(smk.wildcards.shard), "first_row": rows.start,
                                  "imageset": smk.wildcards.imageset})


run_rule(snakemake, main)  # noqa: F821
