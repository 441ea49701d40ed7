"""Rule script: the list of an image set of the decomposition study (key, path, label[, place]); unreadable
images are left out, counted and recorded in the table's metadata."""

from clip_interp.decomposition.data import waterbirds_root
from clip_interp.decomposition.steps import classification_list, waterbirds_list
from clip_interp.io import write_parquet
from clip_interp.workflow import run_rule


def main(smk, log):
    if smk.wildcards.imageset == "waterbirds":
        table, excluded = waterbirds_list(waterbirds_root(smk.input.folder), smk.params.split)
    else:
        table, excluded = classification_list(smk.input.folder, smk.input.get("classification_labels"),
                                              smk.input.get("class_names"))
    skipped = sum(record["count"] for record in excluded)
    log.info("%s: %d readable images, %d unreadable skipped", smk.wildcards.imageset, len(table), skipped)
    for record in excluded:
        log.warning("skipped %d unreadable images: %s", record["count"], record["description"])
    write_parquet(table, smk.output.table, metadata={"imageset": smk.wildcards.imageset, "skipped_unreadable": skipped},
                  excluded=excluded)


run_rule(snakemake, main)  # noqa: F821
