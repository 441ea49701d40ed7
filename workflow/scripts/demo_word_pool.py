"""Rule script: the offline demo's word pool, the second text pool of the TEXTSPAN K sweep."""

from clip_interp.demo.decomposition_sets import write_word_pool
from clip_interp.workflow import run_rule


def main(smk, log):
    log.info("%d words written to %s", write_word_pool(smk.output.words), smk.output.words)


run_rule(snakemake, main)  # noqa: F821
