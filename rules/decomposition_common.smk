# The decomposition study's settings (config section `decomposition`) and helpers shared by its rule files.

from clip_interp.config import (
    TEXTSPAN_POOLS,
    ConfigError,
    image_row_problems,
    local_decomposition_problems,
    paper_heads_file,
    spurious_heads_key,
    spurious_heads_setting,
)
from clip_interp.contribution_store import UNITS as STORE_UNITS
from clip_interp.sources import is_remote, local_path

DECOMPOSITION = config["decomposition"]
DECOMPOSITION_SOURCES = DECOMPOSITION["sources"]
DECOMPOSITION_OUT = "results/decomposition/{model}"
IMAGE_SETS = ["classification", "waterbirds"]
# The text pools the TEXTSPAN K sweep runs on: those of TEXTSPAN_POOLS that the config's sources give.
TEXTSPAN_SWEEP_POOLS = [name for name in TEXTSPAN_POOLS if DECOMPOSITION_SOURCES.get(name)]


def waterbirds_folder():
    """The extracted Waterbirds folder: a configured local folder, else the extraction of the tarball."""
    path = source_path("decomposition", "waterbirds")
    if not is_remote(DECOMPOSITION_SOURCES["waterbirds"]["url"]) and (
        os.path.isdir(path) or produced_by_workflow(path)
    ):
        return path
    return "results/raw/decomposition/waterbirds_extracted"


def image_list_inputs(wildcards):
    """The image folder (and labels/class-names files) an image set's list is made from."""
    if wildcards.imageset == "waterbirds":
        return {"folder": waterbirds_folder()}
    inputs = {"folder": source_path("decomposition", "classification_images")}
    for name in ("classification_labels", "class_names"):
        if DECOMPOSITION_SOURCES.get(name):
            inputs[name] = source_path("decomposition", name)
    return inputs


def text_inputs(wildcards):
    inputs = {name: source_path("decomposition", name) for name in ("class_names", "templates") if DECOMPOSITION_SOURCES.get(name)}
    inputs["descriptions"] = source_path("decomposition", "descriptions")
    for name in ("words", "place_descriptions"):
        if DECOMPOSITION_SOURCES.get(name):
            inputs[name] = source_path("decomposition", name)
    inputs["model"] = model_files(wildcards)
    return inputs


def sweep_pool_embeddings(wildcards):
    """The text embeddings of each pool the TEXTSPAN sweep runs on, by pool name."""
    return {name: f"results/decomposition/{wildcards.model}/text/{name}.npy" for name in TEXTSPAN_SWEEP_POOLS}


def paper_heads_input(wildcards):
    """The paper's Waterbirds heads table, for a model whose heads setting is `paper`."""
    if spurious_heads_setting(config, wildcards.model) == "paper":
        return {"paper_heads": paper_heads_file(config)}
    return {}


def shard_parts(wildcards):
    """The shard files of an image set: their number is known once its image list exists (a checkpoint)."""
    from clip_interp.decomposition.steps import shard_count

    table = checkpoints.decomposition_image_list.get(imageset=wildcards.imageset).output.table
    count = shard_count(table, DECOMPOSITION["shard_size"])
    return [
        f"results/decomposition/{wildcards.model}/store/{wildcards.imageset}/shard_{k:05d}.h5" for k in range(count)
    ]


def checked_image_list(imageset, key, rows):
    """The image list of `imageset` once its checkpoint has written it, with the image rows configured under `key`
    checked against its length: a row beyond the list stops the run when the list is written, before any job that
    reads the rows."""
    table = checkpoints.decomposition_image_list.get(imageset=imageset).output.table
    problems = image_row_problems(key, rows, parquet_rows(table), table)
    if problems:
        raise WorkflowError(str(ConfigError(problems, "the config's image rows do not fit the image list")))
    return table


def neighbour_image_list(wildcards):
    """The classification list, once written, its rows checked against `decomposition.neighbours.image_queries`
    (its integer entries; the strings are image files outside the list)."""
    return checked_image_list("classification", "decomposition.neighbours.image_queries",
                              DECOMPOSITION["neighbours"]["image_queries"])


def spatial_image_list(wildcards):
    """The classification list, once written, its rows checked against `decomposition.spatial_maps.images`."""
    return checked_image_list("classification", "decomposition.spatial_maps.images",
                              DECOMPOSITION["spatial_maps"]["images"])


def image_files(entries):
    """The image files (string entries) of a list of image rows and files: inputs of the rule that reads them, so
    that it re-runs when one changes (checked at start by `local_decomposition_problems`)."""
    return [entry for entry in entries if isinstance(entry, str)]


def check_decomposition_inputs():
    """The decomposition section's settings (:func:`clip_interp.config.local_decomposition_problems`), checked
    before anything runs."""
    problems = local_decomposition_problems(config, written_configs=toy_model_configs())
    if problems:
        raise WorkflowError(str(ConfigError(problems, "the decomposition section of the config cannot run as given")))


check_decomposition_inputs()


def store_variants():
    """The decomposition's store variants of the protocol report (`decomposition.protocol_report.store_variants`):
    name -> (convention, dtype), each the configured protocol with one setting changed to its other value."""
    from clip_interp.decomposition.protocol import store_variants as variants

    return variants(DECOMPOSITION["convention"], DECOMPOSITION["dtype"],
                    DECOMPOSITION["protocol_report"]["store_variants"])


def variant_setting(name):
    """A params function: the store variant's `convention` or `dtype`."""
    return lambda wildcards: store_variants()[wildcards.variant][name]


def variant_shard_parts(wildcards):
    """The shard files of an image set in a store variant."""
    main_store = os.path.join(wildcards.model, "store", "")
    variant_store = os.path.join(wildcards.model, "protocol", wildcards.variant, "store", "")
    return [part.replace(main_store, variant_store) for part in shard_parts(wildcards)]


def protocol_report_inputs(wildcards):
    """Each experiment's table under the configured protocol (`{experiment}`) and under each store variant
    (`{experiment}__{variant}`)."""
    out = f"results/decomposition/{wildcards.model}"
    inputs = {}
    for experiment, (name, settings) in PROTOCOL_EXPERIMENTS.items():
        inputs[experiment] = f"{out}/{name}"
        for variant in store_variants():
            if variant.split("_", 1)[0] in settings:
                inputs[f"{experiment}__{variant}"] = f"{out}/protocol/{variant}/{name}"
    return inputs


# The experiments of the protocol report: their tables and the store settings whose variants re-run them
# (segmentation decomposes its images itself: only the convention applies; Waterbirds re-chooses its heads from the
# variant's TEXTSPAN when they are chosen by TEXTSPAN).
PROTOCOL_EXPERIMENTS = {
    "zero_shot_ablation": ("zero_shot_ablation.parquet", ("convention", "dtype")),
    "textspan_reconstruction": ("textspan_reconstruction.parquet", ("convention", "dtype")),
    "segmentation": ("segmentation.parquet", ("convention",)),
    "waterbirds": ("waterbirds.parquet", ("convention", "dtype")),
    "neighbours": ("neighbours.parquet", ()),
}
