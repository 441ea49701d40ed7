"""Rule script: CANNOT negated sentences with a determiner "no" (noun-chunk or subject-only reading) and
their "some" counterparts; every filter step's count in the log, the table's metadata and the report."""

from clip_interp.io import write_json, write_parquet
from clip_interp.models import load_tokenizer
from clip_interp.negation.cannot import configured_source, load_cannot, require_pairs_left, select_no_some_pairs
from clip_interp.nlp import load_spacy
from clip_interp.workflow import run_rule


def main(smk, log):
    source = configured_source("negation.sources.cannot", smk.params.source_url)
    df = load_cannot(smk.input.tsv, source=source)
    pairs, report = select_no_some_pairs(df, load_tokenizer(smk.params.model), load_spacy(smk.params.spacy_model),
                                         reading=smk.params.reading)
    log.info("reading %r (negation.selectivity.cannot_reading); rows left after each filter step:", report["reading"])
    for step in report["steps"]:
        log.info("  %-32s %d", step, report[step])
    require_pairs_left(pairs, report, source, smk.wildcards.model)
    write_parquet(pairs, smk.output.table, {"model": smk.wildcards.model, "spacy_model": smk.params.spacy_model,
                                            "filter_report": report})
    write_json(report, smk.output.report)


run_rule(snakemake, main)  # noqa: F821
