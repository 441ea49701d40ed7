"""Rule script: the explorer's index files of one model (float16 search copy, float32 exact copy, norms, the
summed heads of each labelled property and of each of the app's property groups) and their description
(explorer_index.json), which the manifest rule records."""

from clip_interp.heads.steps import labelled_layers, write_explorer_index
from clip_interp.heads.vectors import INDEX_FILES
from clip_interp.io import write_json
from clip_interp.workflow import run_rule


def main(smk, log):
    layers = labelled_layers(smk.input[f"labels_{smk.params.labellers[0]}"])
    paths = {name: smk.output[name] for name in INDEX_FILES}
    label_tables = [smk.input[f"labels_{name}"] for name in smk.params.labellers]
    if smk.input.get("app_groups"):
        label_tables.append(smk.input.app_groups)  # the app's groups, summed too where the model has them
    description = write_explorer_index(smk.input.store, layers, paths, label_tables)
    shape = description["files"]["search"]["shape"]
    sizes = ", ".join(f"{entry['path']} ({entry['bytes'] / 2**20:.1f} MiB)" for entry in description["files"].values())
    log.info("index files of %d images x layers %s x %d heads x %d dims, %d head groups: %s", shape[2], layers,
             shape[1], shape[3], len(description["groups"]), sizes)
    write_json(description, smk.output.description)


run_rule(snakemake, main)  # noqa: F821
