"""Rule script: token ids and positions of every instance under one model's tokenizer."""

import pandas as pd

from clip_interp.io import write_json, write_parquet
from clip_interp.models import load_tokenizer
from clip_interp.nlp import load_spacy
from clip_interp.negation.positions import add_positions
from clip_interp.workflow import run_rule


def main(smk, log):
    df = pd.read_parquet(smk.input.table)
    out, report = add_positions(df, load_tokenizer(smk.params.model), load_spacy(smk.params.spacy_model))
    for item in report.get("failed_entries", []):
        log.warning("positions not found: %s", item)
    log.info("report: %s", {k: v for k, v in report.items() if not isinstance(v, (list, dict))})
    write_parquet(out, smk.output.table, {"model": smk.wildcards.model, "variant": smk.wildcards.variant,
                                          "spacy_model": smk.params.spacy_model})
    write_json(report, smk.output.report)


run_rule(snakemake, main)  # noqa: F821
