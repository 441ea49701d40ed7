"""Rule script: causal tracing effects per instance × layer × token position and per generic position."""

import torch

from clip_interp.io import write_parquet
from clip_interp.models import load_model
from clip_interp.negation.causal_tracing import causal_tracing_effects
from clip_interp.negation.tracing import (
    generic_effects,
    image_embeddings_for_keys,
    label_generic_positions,
    read_tracing_instances,
)
from clip_interp.workflow import run_rule


def main(smk, log):
    instances, selection = read_tracing_instances(smk.input.positions, log)
    if selection["differs_beyond_negator"]:
        log.warning("%d kept instances differ after the negator too; their CTE at (0, negator) need not be 1",
                    selection["differs_beyond_negator"])
    image_emb = image_embeddings_for_keys(smk.input.image, instances["key"])
    model = load_model(smk.params.model, smk.params.device)
    log.info("tracing %d instances through %d text layers on %s", len(instances), model.text.n_layers, model.device)
    effects = causal_tracing_effects(model, instances, torch.as_tensor(image_emb, dtype=torch.float32),
                                     batch_size=smk.params.batch_size)
    effects = label_generic_positions(effects, instances)
    generic = generic_effects(effects)
    meta = {
        "model": smk.wildcards.model, "model_spec": smk.params.model, "variant": smk.params.variant,
        "n_instances": len(instances), "n_layers": model.text.n_layers, "selection": selection,
    }
    write_parquet(effects, smk.output.effects, meta)
    write_parquet(generic, smk.output.generic, meta)
    log.info("wrote %d token-level and %d generic rows", len(effects), len(generic))


run_rule(snakemake, main)  # noqa: F821
