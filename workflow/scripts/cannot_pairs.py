"""Rule script: CANNOT negated sentences with a noun-chunk "no" and their "some" counterparts."""

from clip_interp.errors import InputError
from clip_interp.negation.cannot import load_cannot, select_no_some_pairs
from clip_interp.io import write_json, write_parquet
from clip_interp.models import load_tokenizer
from clip_interp.nlp import load_spacy
from clip_interp.workflow import run_rule


def main(smk, log):
    df = load_cannot(smk.input.tsv)
    pairs, report = select_no_some_pairs(df, load_tokenizer(smk.params.model), load_spacy(smk.params.spacy_model))
    log.info("report: %s", report)
    if pairs.empty:
        raise InputError(f"no \"no\"/\"some\" pair of {smk.input.tsv} is left for model {smk.wildcards.model} "
                         f"(filter counts: {report}); check that the file is the CANNOT dataset (negated sentences "
                         "with a noun-chunk \"no\")")
    write_parquet(pairs, smk.output.table, {"model": smk.wildcards.model, "spacy_model": smk.params.spacy_model})
    write_json(report, smk.output.report)


run_rule(snakemake, main)  # noqa: F821
