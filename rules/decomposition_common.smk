# The decomposition study's settings (config section `decomposition`) and helpers shared by its rule files.

from clip_interp.config import (
    ConfigError,
    image_row_problems,
    local_decomposition_problems,
    paper_heads_file,
    spurious_heads_key,
    spurious_heads_setting,
)
from clip_interp.sources import is_remote, local_path

DECOMPOSITION = config["decomposition"]
DECOMPOSITION_SOURCES = DECOMPOSITION["sources"]
DECOMPOSITION_OUT = "results/decomposition/{model}"
IMAGE_SETS = ["classification", "waterbirds"]


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
    if DECOMPOSITION_SOURCES.get("place_descriptions"):
        inputs["place_descriptions"] = source_path("decomposition", "place_descriptions")
    inputs["model"] = model_files(wildcards)
    return inputs


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
    """The classification list, once written, its rows checked against `decomposition.neighbours.image_queries`."""
    return checked_image_list("classification", "decomposition.neighbours.image_queries",
                              DECOMPOSITION["neighbours"]["image_queries"])


def check_decomposition_inputs():
    """The decomposition section's settings (:func:`clip_interp.config.local_decomposition_problems`), checked
    before anything runs."""
    problems = local_decomposition_problems(config, written_configs=toy_model_configs())
    if problems:
        raise WorkflowError(str(ConfigError(problems, "the decomposition section of the config cannot run as given")))


check_decomposition_inputs()
