"""Rule script: CANNOT negated sentences with a determiner "no" (noun-chunk or subject-only reading) and
their "some" counterparts; every filter step's count in the log, the table's metadata and the report."""

from clip_interp.errors import InputError
from clip_interp.negation.cannot import load_cannot, select_no_some_pairs
from clip_interp.io import write_json, write_parquet
from clip_interp.models import load_tokenizer
from clip_interp.nlp import load_spacy
from clip_interp.workflow import run_rule


def main(smk, log):
    df = load_cannot(smk.input.tsv)
    pairs, report = select_no_some_pairs(df, load_tokenizer(smk.params.model), load_spacy(smk.params.spacy_model),
                                         reading=smk.params.reading)
    log.info("reading %r (negation.selectivity.cannot_reading); rows left after each filter step:", report["reading"])
    for step in report["steps"]:
        log.info("  %-32s %d", step, report[step])
    if pairs.empty:
        counts = ", ".join(f"{step}: {report[step]}" for step in report["steps"])
        raise InputError(f"no \"no\"/\"some\" pair of {smk.input.tsv} is left for model {smk.wildcards.model} "
                         f"under the reading {report['reading']!r} (rows left after each step: {counts}); check that "
                         "the file is the CANNOT dataset, or choose negation.selectivity.cannot_reading: noun_chunk")
    write_parquet(pairs, smk.output.table, {"model": smk.wildcards.model, "spacy_model": smk.params.spacy_model,
                                            "filter_report": report})
    write_json(report, smk.output.report)


run_rule(snakemake, main)  # noqa: F821
