"""Rule script: the standard or rephrased VALSE existence instances as a Parquet table."""

from pathlib import Path

from clip_interp.errors import InputError
from clip_interp.io import write_json, write_parquet
from clip_interp.negation.valse import prepare_variant
from clip_interp.workflow import run_rule


def main(smk, log):
    variant = smk.wildcards.variant
    df, report = prepare_variant(smk.input.valse, variant, smk.params.min_caption_votes)
    images = Path(smk.input.images)
    missing = sorted({f for f in df["image_file"] if not (images / f).is_file()})
    if missing:
        raise InputError(
            f"{len(missing)} image(s) referenced by {smk.input.valse} are missing from {images}, e.g. {missing[:3]}; "
            "re-run the image extraction (delete the folder) or fix `negation.sources.visual7w_images` in the config"
        )
    for reason in ("malformed_entries", "dropped_by_shape_entries"):
        for item in report.get(reason, []):
            log.warning("%s: %s", reason, item)
    log.info("report: %s", {k: v for k, v in report.items() if not isinstance(v, (list, dict))})
    write_parquet(df, smk.output.table, {"variant": variant, "min_caption_votes": smk.params.min_caption_votes,
                                         "source": str(smk.input.valse)})
    write_json(report, smk.output.report)


run_rule(snakemake, main)  # noqa: F821
