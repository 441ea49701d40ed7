"""Rule script: the CLIP-InterpreT app's property groups of one model (its hand-curated heads per property), with our
1-based layers beside the published 0-based ones."""

from clip_interp.heads.published import read_property_heads
from clip_interp.heads.steps import app_property_groups
from clip_interp.io import write_parquet
from clip_interp.workflow import run_rule


def main(smk, log):
    table = app_property_groups(read_property_heads(smk.input.property_heads), smk.params.model)
    log.info("%d properties, %d (property, head) rows", table["property"].nunique(), len(table))
    write_parquet(table, smk.output[0], metadata={"model": smk.wildcards.model, "source": "property_heads.tsv"})


run_rule(snakemake, main)  # noqa: F821
