# The decomposition study's settings (config section `decomposition`) and helpers shared by its rule files.

from clip_interp.config import ConfigError
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


def shard_parts(wildcards):
    """The shard files of an image set: their number is known once its image list exists (a checkpoint)."""
    from clip_interp.decomposition.steps import shard_count

    table = checkpoints.decomposition_image_list.get(imageset=wildcards.imageset).output.table
    count = shard_count(table, DECOMPOSITION["shard_size"])
    return [
        f"results/decomposition/{wildcards.model}/store/{wildcards.imageset}/shard_{k:05d}.h5" for k in range(count)
    ]


def local_decomposition_problems():
    """One line per local source of the decomposition section that does not exist (paths the workflow
    writes itself excepted); ImageNet validation must be a local folder."""
    lines = []
    images = DECOMPOSITION_SOURCES["classification_images"]["url"]
    if is_remote(images):
        lines.append(
            f"`decomposition.sources.classification_images.url` is {images!r}; the classification images "
            "(ImageNet validation) are read from a local folder only; download them with your ImageNet "
            "account and give the folder"
        )
    for name, spec in DECOMPOSITION_SOURCES.items():
        url = spec["url"]
        if is_remote(url) or produced_by_workflow(local_path(url)):
            continue
        if not local_path(url).exists():
            lines.append(
                f"`decomposition.sources.{name}.url` is {url!r}, which does not exist (looked for "
                f"{str(local_path(url))!r}); fix the path, put the file there, or give an http(s) URL"
            )
    if DECOMPOSITION["spurious"]["heads"] == "auto" and not DECOMPOSITION_SOURCES.get("place_descriptions"):
        lines.append(
            "`decomposition.spurious.heads` is 'auto', which needs `decomposition.sources.place_descriptions` "
            "(a file of place/background descriptions); add it or list the heads"
        )
    if DECOMPOSITION["textspan"]["texts_per_head"] > DECOMPOSITION["textspan"]["rank"]:
        lines.append(
            f"`decomposition.textspan.texts_per_head` ({DECOMPOSITION['textspan']['texts_per_head']}) exceeds "
            f"`decomposition.textspan.rank` ({DECOMPOSITION['textspan']['rank']}); lower it or raise the rank"
        )
    return lines


def check_decomposition_inputs():
    problems = local_decomposition_problems()
    if problems:
        raise WorkflowError(str(ConfigError(problems, "the decomposition section of the config cannot run as given")))


check_decomposition_inputs()
