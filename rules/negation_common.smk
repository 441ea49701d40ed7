# The negation study's settings (config section `negation`) and helpers shared by its rule files.

from clip_interp.sources import is_remote, local_path

NEGATION = config["negation"]
VARIANTS = list(NEGATION["dataset"]["variants"])
SYNTHETIC = NEGATION["benchmark"] == "synthetic"


def valse_json():
    """The VALSE-format benchmark file: generated (demo) or fetched."""
    if SYNTHETIC:
        return "results/synthetic/existence.json"
    return "results/raw/valse/existence.json"


def images_dir():
    if SYNTHETIC:
        return "results/synthetic/images"
    return "results/raw/images"


def images_archive():
    """The images source to extract from: a downloaded zip, or the configured local zip/folder."""
    url = NEGATION["sources"]["visual7w_images"]["url"]
    return "results/raw/downloads/visual7w_images.zip" if is_remote(url) else str(local_path(url))


def analysis_variant(analysis):
    """The dataset variant an analysis reads (`negation.<name>.variant`), checked against `negation.dataset.variants`."""
    variant = NEGATION[analysis]["variant"]
    if variant not in VARIANTS:
        raise WorkflowError(
            f"config negation.{analysis}.variant is {variant!r}, which is not among negation.dataset.variants "
            f"{VARIANTS}; add it to negation.dataset.variants or choose one of them"
        )
    return variant
