"""Rule script: single-colour ablation of every image-tower layer's MHA and MLP output, per instance."""

import pandas as pd

from clip_interp.io import write_parquet
from clip_interp.models import load_model
from clip_interp.negation.image_ablation import image_ablation_from_caches
from clip_interp.workflow import run_rule


def main(smk, log):
    positions = pd.read_parquet(smk.input.positions, columns=["key", "negation"])
    model = load_model(smk.params.model, smk.params.device)
    batch_size = smk.params.batch_size
    log.info("variant %s, components %s, device %s, %d image layers, batches of %d images",
             smk.params.variant, smk.params.components, model.device, model.vision.n_layers, batch_size)
    table, counts = image_ablation_from_caches(
        model, smk.input.image, smk.input.text, positions.set_index("key")["negation"],
        components=smk.params.components, batch_size=batch_size,
    )
    table.insert(1, "variant", smk.params.variant)
    log.info("%d instances (%d negated captions, %d negated foils); %d image-cache rows not in this variant",
             counts["n_instances"], counts["n_instances_caption"], counts["n_instances_foil"],
             counts["n_image_cache_rows_unused"])
    for (component, side), part in table.groupby(["component", "negation"]):
        log.info("%s, negation in %s: mean IAE per layer %s", component, side,
                 part.groupby("layer")["iae"].mean().round(4).to_dict())
    write_parquet(table, smk.output[0], {
        "model": smk.wildcards.model, "variant": smk.params.variant, "components": list(smk.params.components),
        "n_layers": model.vision.n_layers, **counts,
    })


run_rule(snakemake, main)  # noqa: F821
