# The head-properties study's settings (config section `heads`) and helpers shared by its rule files.
# It reads the decomposition study's outputs (stores, image lists, TEXTSPAN tables), so it needs that study.

from clip_interp.config import ConfigError
from clip_interp.sources import is_remote, local_path

HEADS = config["heads"]
HEADS_SOURCES = HEADS["sources"]
HEADS_OUT = "results/heads/{model}"
HEADS_ANALYSES = ["property_neighbours", "topic_maps", "contrastive_maps", "image_neighbours", "text_neighbours"]
HEADS_CROSS_FIGURES = ["scores_per_model", "property_distribution", "property_layers"]


def heads_source(name):
    """The local path of source `heads.sources.<name>`, or where its fetch rule puts a download."""
    url = HEADS_SOURCES[name]["url"]
    if is_remote(url):
        return f"results/raw/heads/{name}"
    return os.path.normpath(str(local_path(url)))


def heads_label_tables(wildcards):
    """The label tables of a model, one per configured labeller."""
    return {
        f"labels_{labeller}": f"results/heads/{wildcards.model}/labels_{labeller}.parquet"
        for labeller in HEADS["labellers"]
    }


def heads_labeller_inputs(wildcards):
    """What a labeller reads: the model's TEXTSPAN table, the taxonomy, the model files (and the LLM's examples)."""
    inputs = {
        "textspan": f"results/decomposition/{wildcards.model}/textspan.parquet",
        "taxonomy": HEADS["taxonomy"],
        "model": model_files(wildcards),
    }
    if wildcards.labeller == "llm":
        inputs["examples"] = HEADS["llm"]["examples"]
    return inputs


def heads_index_inputs(wildcards):
    """Everything the explorer's index of a model names: its manifest and the files the manifest points at."""
    image_set = HEADS["image_set"]
    return {
        "manifest": f"results/heads/{wildcards.model}/explorer.json",
        "store": f"results/decomposition/{wildcards.model}/store/{image_set}.h5",
        "images": f"results/decomposition/datasets/{image_set}.parquet",
        "textspan": f"results/decomposition/{wildcards.model}/textspan.parquet",
        "scores": f"results/heads/{wildcards.model}/scores.parquet",
        **heads_label_tables(wildcards),
        "model": model_files(wildcards),
    }


def heads_problems():
    """One line per setting of the heads section (or of the sections it depends on) that cannot work."""
    lines = []
    if "decomposition" not in STUDIES:
        return [
            "`studies` lists heads but not decomposition; the heads study reads the decomposition study's stores "
            "and TEXTSPAN tables: add decomposition to `studies`"
        ]
    textspan = config["decomposition"]["textspan"]
    if textspan["n_layers"] < HEADS["n_layers"]:
        lines.append(
            f"`decomposition.textspan.n_layers` ({textspan['n_layers']}) is smaller than `heads.n_layers` "
            f"({HEADS['n_layers']}): TEXTSPAN must cover the last min({HEADS['n_layers']}, L) layers that the heads "
            f"study labels; raise `decomposition.textspan.n_layers` to {HEADS['n_layers']}"
        )
    for key, value in (("heads.n_texts", HEADS["n_texts"]), ("heads.association.n_texts", HEADS["association"]["n_texts"])):
        if value > textspan["texts_per_head"]:
            lines.append(
                f"`{key}` ({value}) exceeds `decomposition.textspan.texts_per_head` ({textspan['texts_per_head']}), "
                "the TEXTSPAN texts there are per head; lower it or raise texts_per_head"
            )
    if HEADS["association"]["min_matches"] > HEADS["association"]["n_texts"]:
        lines.append(
            f"`heads.association.min_matches` ({HEADS['association']['min_matches']}) exceeds "
            f"`heads.association.n_texts` ({HEADS['association']['n_texts']}); no head could be associated"
        )
    files = [("heads.taxonomy", HEADS["taxonomy"])]
    if "llm" in HEADS["labellers"]:
        files.append(("heads.llm.examples", HEADS["llm"]["examples"]))
    files += [(f"heads.sources.{name}.url", spec["url"]) for name, spec in HEADS_SOURCES.items() if not is_remote(spec["url"])]
    for key, path in files:
        if not local_path(path).exists():
            lines.append(f"`{key}` is {path!r}, which does not exist; fix the path or put the file there")
    return lines


def check_heads_inputs():
    problems = heads_problems()
    if problems:
        raise WorkflowError(str(ConfigError(problems, "the heads section of the config cannot run as given")))


check_heads_inputs()
