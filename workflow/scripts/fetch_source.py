"""Rule script: fetch one configured source (URL, file:// URL or local path) and verify it."""

from clip_interp.sources import fetch_source
from clip_interp.workflow import run_rule


def main(smk, log):
    info = fetch_source(dict(smk.params.source), smk.output[0], name=smk.params.name, kind=smk.params.kind,
                        json_shape=smk.params.json_shape, log=log.info)
    log.info("fetched %s", info)


run_rule(snakemake, main)  # noqa: F821
