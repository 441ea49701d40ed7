"""Rule script: token ids and positions of every instance under one model's tokenizer."""

import pandas as pd

from clip_interp.errors import InputError
from clip_interp.io import exclusion_record, write_json, write_parquet
from clip_interp.models import load_tokenizer
from clip_interp.negation.positions import TOO_LONG_REASON, add_positions
from clip_interp.nlp import load_spacy
from clip_interp.workflow import run_rule


def main(smk, log):
    df = pd.read_parquet(smk.input.table)
    out, report = add_positions(df, load_tokenizer(smk.params.model), load_spacy(smk.params.spacy_model))
    for item in report.get("failed_entries", []):
        log.warning("positions not found: %s", item)
    excluded = []
    if report["too_long"]:
        log.warning("%d of %d instances excluded: %s (%s)", report["too_long"], len(df), TOO_LONG_REASON,
                    report["too_long_entries"])
        excluded.append(exclusion_record(smk.output.table, "too_long", TOO_LONG_REASON,
                                         [e["key"] for e in report["too_long_entries"]]))
    log.info("report: %s", {k: v for k, v in report.items() if not isinstance(v, (list, dict))})
    if out.empty:
        raise InputError(
            f"no instance of {smk.input.table} is left for model {smk.wildcards.model}: {len(df)} instances, "
            f"{report['too_long']} excluded as longer than the model's context; check the dataset and the model's "
            "tokenizer")
    write_parquet(out, smk.output.table, {"model": smk.wildcards.model, "variant": smk.wildcards.variant,
                                          "spacy_model": smk.params.spacy_model}, excluded=excluded)
    write_json(report, smk.output.report)


run_rule(snakemake, main)  # noqa: F821
