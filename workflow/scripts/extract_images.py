"""Rule script: extract only the images that VALSE existence references."""

from clip_interp.negation.valse import read_valse_entries
from clip_interp.sources import extract_images
from clip_interp.workflow import run_rule


def main(smk, log):
    entries = read_valse_entries(smk.input.valse)
    wanted = sorted({e["image_file"] for e in entries.values() if isinstance(e, dict) and e.get("image_file")})
    log.info("%d distinct images referenced by %d entries", len(wanted), len(entries))
    written = extract_images(smk.input.archive, wanted, smk.output[0])
    log.info("extracted %d images into %s", len(written), smk.output[0])


run_rule(snakemake, main)  # noqa: F821
