"""Rule script: pairs of generic positions patched together vs the sum of the single-slot effects."""

import pandas as pd
import torch

from clip_interp.io import write_parquet
from clip_interp.models import load_model
from clip_interp.negation.pair_patching import (
    pair_comparison,
    pair_counts,
    pair_patching_effects,
    pair_summary,
    plot_pair_patching,
)
from clip_interp.negation.tracing import (
    attach_segments,
    drop_undefined_effects,
    image_embeddings_for_keys,
    read_tracing_instances,
)
from clip_interp.plotting import save_figure
from clip_interp.workflow import run_rule


def main(smk, log):
    instances, selection = read_tracing_instances(smk.input.positions, log)
    image_emb = image_embeddings_for_keys(smk.input.image, instances["key"])
    model = load_model(smk.params.model, smk.params.device)
    log.info("pair patching %d instances through %d text layers on %s", len(instances), model.text.n_layers,
             model.device)
    table = pair_patching_effects(model, instances, torch.as_tensor(image_emb, dtype=torch.float32),
                                  batch_size=smk.params.batch_size)
    counts = pair_counts(table)
    log.info("instances per pair: %s", counts["n_instances_per_pair"])
    segmented = attach_segments(table, pd.read_parquet(smk.input.scores), smk.params.variant, smk.input.scores)
    segmented, undefined = drop_undefined_effects(segmented)
    if undefined:
        log.warning("%d instances have d = 0 and no defined CTE; left out of the summary: %s", len(undefined),
                    undefined[:10])
    summary = pair_summary(pair_comparison(segmented), model.text.n_layers)
    meta = {
        "model": smk.wildcards.model, "variant": smk.params.variant, "n_layers": model.text.n_layers,
        "selection": selection, **counts, "undefined_cte": len(undefined), "undefined_cte_keys": undefined,
        "figure_segment": smk.params.segment,
        "interaction": "CTE(A+B) - (CTE(A) + CTE(B)); < 0 redundant, 0 additive, > 0 synergistic",
    }
    write_parquet(table, smk.output.table, meta)
    write_parquet(summary, smk.output.summary, meta)
    save_figure(plot_pair_patching(summary, smk.params.segment, smk.wildcards.model, smk.params.variant),
                [smk.output.png, smk.output.pdf])


run_rule(snakemake, main)  # noqa: F821
