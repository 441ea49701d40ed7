# The head-properties study's settings (config section `heads`) and helpers shared by its rule files.
# It reads the decomposition study's outputs (stores, image lists, TEXTSPAN tables), so it needs that study.

from clip_interp.config import ConfigError, heads_missing_files, heads_problems
from clip_interp.heads import ANALYSES as HEADS_ANALYSES
from clip_interp.heads.published import PAPER_SCORES, published_labeller_problems
from clip_interp.sources import is_remote, local_path

HEADS = config["heads"]
HEADS_SOURCES = HEADS["sources"]
HEADS_OUT = "results/heads/{model}"
# The explorer's index files beside explorer.json (clip_interp.heads.vectors.INDEX_FILES) and their description.
HEADS_INDEX_FILES = [
    "explorer_index.f16.npy",
    "explorer_index.f32.npy",
    "explorer_norms.f32.npy",
    "explorer_groups.f16.npy",
    "explorer_group_norms.f32.npy",
    "explorer_index.json",
]
HEADS_CROSS_FIGURES = ["scores_per_model", "property_distribution", "property_layers"]


def published_model(model):
    """Whether CLIP-InterpreT published labels of this model entry (an open_clip model of the six, with weights)."""
    spec = config["models"][model]
    if spec.get("backend") != "open_clip" or spec.get("random_init"):
        return False
    return (spec.get("name"), spec.get("pretrained")) in PAPER_SCORES


def heads_published_input(wildcards):
    """The published labels, for a model they cover (the agreement is computed there only; elsewhere NaN)."""
    return {"published": source_path("heads", "published_labels")} if published_model(wildcards.model) else {}


def heads_published_fingerprint(wildcards):
    """The published labels' fingerprint (`source_fingerprint`), for a model they cover; elsewhere None."""
    return source_fingerprint("heads", "published_labels")(wildcards) if published_model(wildcards.model) else None


def heads_app_groups_input(wildcards):
    """The CLIP-InterpreT app's property groups of a model the app covers (the explorer's `app` property set);
    nothing for other models."""
    if not published_model(wildcards.model):
        return {}
    return {"app_groups": f"results/heads/{wildcards.model}/property_groups_app.parquet"}


def heads_label_tables(wildcards):
    """The label tables of a model, one per configured labeller."""
    return {
        f"labels_{labeller}": f"results/heads/{wildcards.model}/labels_{labeller}.parquet"
        for labeller in HEADS["labellers"]
    }


def heads_labeller_inputs(wildcards):
    """What a labeller reads: the model's TEXTSPAN table, the taxonomy, the model files (and the LLM's examples)."""
    inputs = {
        "textspan": HEADS_DECOMPOSITION["textspan"].format(model=wildcards.model),
        "taxonomy": HEADS["taxonomy"],
        "model": model_files(wildcards),
    }
    if wildcards.labeller == "llm":
        inputs["examples"] = HEADS["llm"]["examples"]
    if wildcards.labeller == "published":
        inputs["published"] = source_path("heads", "published_labels")
    return inputs


def heads_open_llm():
    """Whether the LLM labels with an open vocabulary, so that its labels are mapped onto the taxonomy."""
    return "llm" in HEADS["labellers"] and HEADS["llm"]["vocabulary"] == "open"


def heads_llm_mapping_input(wildcards):
    """The open-vocabulary LLM labels' mapping onto the taxonomy, when the LLM labels with an open vocabulary."""
    return {"mapping": f"results/heads/{wildcards.model}/llm_label_mapping.parquet"} if heads_open_llm() else {}


def heads_judgements_path(model):
    """The filled judging sheet of a model (`heads.association.judgements`, `{model}` replaced), or None."""
    path = HEADS["association"]["judgements"]
    return None if path is None else path.replace("{model}", model)


def heads_judgements_input(wildcards):
    """The filled judging sheet that replaces the automatic matcher for the association, when configured."""
    path = heads_judgements_path(wildcards.model)
    return {} if path is None else {"judgements": path}


def heads_index_inputs(wildcards):
    """Everything the explorer's index of a model names: its manifest and the files the manifest points at, but
    the image list (:func:`heads_query_image_list`)."""
    return {
        "manifest": f"results/heads/{wildcards.model}/explorer.json",
        **{name: f"results/heads/{wildcards.model}/{name}" for name in HEADS_INDEX_FILES},
        **{name: HEADS_DECOMPOSITION[name].format(model=wildcards.model) for name in ("store", "textspan")},
        "scores": f"results/heads/{wildcards.model}/scores.parquet",
        **heads_label_tables(wildcards),
        **heads_app_groups_input(wildcards),
        "model": model_files(wildcards),
    }


def heads_query_image_list(wildcards):
    """The image list the analyses search, once written, its rows checked against `heads.analyses.images`."""
    return checked_image_list(HEADS["image_set"], "heads.analyses.images", HEADS["analyses"]["images"])


def _heads_index_shape(store):
    """(images, analysed layers, heads, joint width) of the explorer's index of a store. A store not yet written
    raises the FileNotFoundError by which Snakemake defers a resource until it exists."""
    import errno

    import h5py

    if not os.path.exists(store):
        raise FileNotFoundError(errno.ENOENT, "decomposition store not written yet", store)
    with h5py.File(store, "r") as f:
        n_images, n_layers, n_heads, width = f["heads"].shape
    return n_images, min(HEADS["n_layers"], n_layers), n_heads, width


def heads_index_mem_mb(wildcards, input):
    """Memory of an analysis job (MB): the model's, plus what the memory-mapped index holds resident (the norms,
    float32, images x analysed layers x heads; a search's chunk buffers and its float64 scores, 256 MB)."""
    n_images, n_layers, n_heads, _ = _heads_index_shape(input.store)
    return config["cluster_resources"]["model_mem_mb"] + int(n_images * n_layers * n_heads * 4 / 1e6) + 256


def heads_index_writer_mem_mb(wildcards, input):
    """Memory of the index writer (MB): a batch of 1,024 images' contributions in float32 and float64 (norms and
    group sums), and the norms (the files are written through memory maps, flushed by the kernel)."""
    n_images, n_layers, n_heads, width = _heads_index_shape(input.store)
    return int((1024 * n_layers * n_heads * width * 12 + n_images * n_layers * n_heads * 4) / 1e6) + 500


# The heads reproduction report (rules/heads_reproduction.smk).
def heads_report_label_tables():
    """Every label table the report reads, as `[model, labeller, path]`: each model's tables as
    `heads_label_tables` lists them."""
    from types import SimpleNamespace

    return [
        [model, name.removeprefix("labels_"), path]
        for model in MODELS
        for name, path in heads_label_tables(SimpleNamespace(model=model)).items()
    ]


def heads_report_published_input(wildcards):
    """The published labels, when a configured model is one of the paper's (the readings row needs them)."""
    if any(published_model(model) for model in MODELS):
        return {"published": source_path("heads", "published_labels")}
    return {}


def heads_report_published_fingerprint(wildcards):
    """The published labels' fingerprint when the report reads them; else None."""
    if any(published_model(model) for model in MODELS):
        return source_fingerprint("heads", "published_labels")(wildcards)
    return None


def llm_example_problems():
    """The LLM labeller's examples must be labelled with properties of the configured taxonomy."""
    from clip_interp.errors import InputError
    from clip_interp.heads.llm import load_examples
    from clip_interp.heads.taxonomy import load_taxonomy

    try:
        load_examples(local_path(HEADS["llm"]["examples"]), load_taxonomy(local_path(HEADS["taxonomy"])))
    except InputError as error:
        return [f"`heads.llm.examples` with `heads.taxonomy`: {error}"]
    return []


def check_heads_inputs():
    """The heads section's settings (:func:`clip_interp.config.heads_problems`) and, once its files exist, the LLM
    labeller's examples, checked before anything runs."""
    uses_published = "published" in HEADS["labellers"] or any(published_model(model) for model in MODELS)
    problems = heads_problems(config, uses_published, written_configs=toy_model_configs())
    if "published" in HEADS["labellers"]:
        problems += published_labeller_problems(config["models"])
    problems += [
        f"`heads.association.judgements` is {HEADS['association']['judgements']!r}, the judging sheet the workflow "
        f"writes for model {model!r} (and would write over); fill a copy elsewhere and give its path"
        for model in MODELS
        if heads_judgements_path(model)
        and os.path.normpath(heads_judgements_path(model)) == f"results/heads/{model}/association_sheet.tsv"
    ]
    if HEADS["analyses"]["property_set"] == "app":
        problems += [
            f"`heads.analyses.property_set: app` needs CLIP-InterpreT's property groups, which exist only for its six "
            f"models; model {model} is not one of them: use auto (the app's groups where they exist) or a labeller"
            for model in MODELS
            if not published_model(model)
        ]
    if "llm" in HEADS["labellers"] and not heads_missing_files(config, uses_published):
        problems += llm_example_problems()
    if problems:
        raise WorkflowError(str(ConfigError(problems, "the heads section of the config cannot run as given")))


check_heads_inputs()


# The decomposition study's outputs that the heads study reads (with the {model} wildcard): the image set's store
# and image table, and the TEXTSPAN table (defined once the checks above found the decomposition study).
HEADS_DECOMPOSITION = {
    "store": f"{DECOMPOSITION_OUT}/store/{HEADS['image_set']}.h5",
    "images": f"results/decomposition/datasets/{HEADS['image_set']}.parquet",
    "textspan": f"{DECOMPOSITION_OUT}/textspan.parquet",
}
