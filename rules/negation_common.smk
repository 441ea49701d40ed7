# The negation study's settings (config section `negation`) and helpers shared by its rule files.

from clip_interp.config import ConfigError, text_layer_problems
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


def analysis_variant(analysis):
    """The dataset variant an analysis reads (`negation.<name>.variant`), checked against `negation.dataset.variants`."""
    variant = NEGATION[analysis]["variant"]
    if variant not in VARIANTS:
        raise WorkflowError(
            f"config negation.{analysis}.variant is {variant!r}, which is not among negation.dataset.variants "
            f"{VARIANTS}; add it to negation.dataset.variants or choose one of them"
        )
    return variant


def local_source_problems():
    """One line per local source of the configured benchmark that does not exist."""
    used = ["cannot"] if SYNTHETIC else list(NEGATION["sources"])
    lines = []
    for name in used:
        url = NEGATION["sources"][name]["url"]
        if not is_remote(url) and not local_path(url).exists():
            lines.append(
                f"`negation.sources.{name}.url` is {url!r}, which does not exist (looked for {str(local_path(url))!r}); "
                "fix the path, put the file there, or give an http(s) URL"
            )
    return lines


ANALYSES_WITH_VARIANT = ("preliminary", "causal_tracing", "selectivity", "image_ablation", "followups")


def analysis_variant_problems():
    """One line per analysis whose `negation.<analysis>.variant` is not among `negation.dataset.variants`."""
    return [
        f"`negation.{analysis}.variant` is {NEGATION[analysis]['variant']!r}, which is not among "
        f"`negation.dataset.variants` {VARIANTS}; add it there or choose one of them"
        for analysis in ANALYSES_WITH_VARIANT
        if NEGATION[analysis]["variant"] not in VARIANTS
    ]


def check_negation_inputs():
    """Local sources, analysis variants and layer numbers of the negation section, checked before anything runs."""
    problems = local_source_problems()
    problems += analysis_variant_problems()
    problems += text_layer_problems("negation.selectivity.layer", NEGATION["selectivity"]["layer"], config["models"])
    if problems:
        raise WorkflowError(str(ConfigError(problems, "the negation section of the config cannot run as given")))


check_negation_inputs()
