"""Rule script: one of the explorer's five analyses over the configured queries of the image set: table and grid."""

from clip_interp.heads.index import HeadIndex
from clip_interp.heads.steps import run_analysis
from clip_interp.io import write_parquet
from clip_interp.workflow import run_rule


def main(smk, log):
    index = HeadIndex.from_manifest(smk.input.manifest, device=smk.params.device)
    table, metadata = run_analysis(smk.params.analysis, index, smk.params.analyses, [smk.output.png, smk.output.pdf],
                                   n_texts=smk.params.n_texts)
    for line in metadata.get("skipped", []):
        log.warning("skipped: %s", line)
    log.info("%s: %d rows", smk.params.analysis, len(table))
    write_parquet(table, smk.output.table, metadata={"model": smk.wildcards.model, **metadata})


run_rule(snakemake, main)  # noqa: F821
