"""Rule script: cache the image tower's activations for every instance's image and its single-colour version."""

from pathlib import Path

import pandas as pd

from clip_interp.images import POLICY_DESCRIPTIONS
from clip_interp.models import load_model
from clip_interp.negation.caches import write_image_cache
from clip_interp.workflow import run_rule


def main(smk, log):
    df = pd.read_parquet(smk.input.table)
    model = load_model(smk.params.model, smk.params.device)
    paths = [Path(smk.input.images) / f for f in df["image_file"]]
    log.info("%d images, device %s; %s", len(paths), model.device, POLICY_DESCRIPTIONS["stop"])
    write_image_cache(model, df["key"].tolist(), paths, smk.output[0], model_id=smk.wildcards.model,
                      batch_size=smk.params.batch_size, dtype=smk.params.dtype,
                      metadata={"unreadable_images": "stop", "unreadable_images_policy": POLICY_DESCRIPTIONS["stop"]})


run_rule(snakemake, main)  # noqa: F821
