"""Rule script: the judging sheet of a model's association (one row per labeller and head, empty match columns)."""

import pandas as pd

from clip_interp.heads.judgements import association_sheet
from clip_interp.io import atomic_path
from clip_interp.workflow import run_rule


def main(smk, log):
    labels = {name: pd.read_parquet(smk.input[f"labels_{name}"]) for name in smk.params.labellers}
    sheet = association_sheet(smk.wildcards.model, labels, smk.params.n_texts)
    with atomic_path(smk.output[0]) as tmp:
        sheet.to_csv(tmp, sep="\t", index=False)
    log.info("judging sheet: %d rows (labellers %s), %d texts each", len(sheet), list(labels), smk.params.n_texts)


run_rule(snakemake, main)  # noqa: F821
