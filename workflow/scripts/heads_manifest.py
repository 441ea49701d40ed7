"""Rule script: the explorer's manifest of one model (explorer.json), naming the files its index reads."""

import json

import h5py

from clip_interp.heads.steps import labelled_layers, manifest_for
from clip_interp.io import write_json
from clip_interp.workflow import run_rule


def main(smk, log):
    labels = {name: smk.input[f"labels_{name}"] for name in smk.params.labellers}
    layers = labelled_layers(smk.input[f"labels_{smk.params.labellers[0]}"])
    with open(smk.input.index, encoding="utf-8") as f:
        index = json.load(f)
    with h5py.File(smk.input.store, "r") as f:
        n_images, n_layers, n_heads = f["heads"].shape[:3]
        convention = str(f.attrs["convention"])
    manifest = manifest_for(model=smk.wildcards.model, spec=smk.params.model, image_set=smk.params.image_set,
                            store=smk.input.store, images=smk.input.images, textspan=smk.input.textspan, labels=labels,
                            scores=smk.input.scores, manifest_path=smk.output[0], n_images=n_images, layers=layers,
                            n_layers=n_layers, n_heads=n_heads, convention=convention,
                            property_groups={"app": smk.input.app_groups} if smk.input.get("app_groups") else {},
                            index=index)
    log.info("index of %d images, layers %s, %d heads each", n_images, layers, n_heads)
    write_json(manifest, smk.output[0])


run_rule(snakemake, main)  # noqa: F821
