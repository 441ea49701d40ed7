"""Rule script: causal tracing of the text tower's MHA and MLP outputs, beside the residual-stream version."""

import pandas as pd
import torch

from clip_interp.errors import InputError
from clip_interp.io import read_parquet_metadata, write_parquet
from clip_interp.models import load_model
from clip_interp.negation.site_tracing import plot_site_tracing, site_tracing_effects
from clip_interp.negation.tracing import (
    attach_segments,
    drop_undefined_effects,
    generic_effects,
    image_embeddings_for_keys,
    label_generic_positions,
    read_tracing_instances,
    summarise_effects,
)
from clip_interp.plotting import save_figure
from clip_interp.workflow import run_rule


def _summary(generic, scores, variant, source, n_layers, log, site):
    generic = attach_segments(generic, scores, variant, source)
    generic, undefined = drop_undefined_effects(generic)
    if undefined:
        log.warning("%s: %d instances have d = 0 and no defined CTE; left out", site, len(undefined))
    return summarise_effects(generic, n_layers=n_layers).assign(site=site), undefined


def main(smk, log):
    variant = smk.params.variant
    instances, selection = read_tracing_instances(smk.input.positions, log)
    image_emb = image_embeddings_for_keys(smk.input.image, instances["key"])
    model = load_model(smk.params.model, smk.params.device)
    n_layers = model.text.n_layers
    log.info("tracing sites %s of %d instances through %d text blocks on %s", smk.params.sites, len(instances),
             n_layers, model.device)
    table = site_tracing_effects(model, instances, torch.as_tensor(image_emb, dtype=torch.float32),
                                 sites=smk.params.sites, batch_size=smk.params.batch_size)
    scores = pd.read_parquet(smk.input.scores)
    resid = pd.read_parquet(smk.input.resid)
    if set(resid["key"]) != set(instances["key"]):
        raise InputError(f"{smk.input.resid} traces other instances than {smk.input.positions}; re-run causal_tracing")
    summaries, undefined = {}, {}
    summaries["resid"], undefined["resid"] = _summary(resid, scores, variant, smk.input.scores, n_layers, log, "resid")
    for site, part in table.groupby("site", sort=False):
        generic = generic_effects(label_generic_positions(part.drop(columns="site"), instances))
        summaries[site], undefined[site] = _summary(generic, scores, variant, smk.input.scores, n_layers, log, site)
    summary = pd.concat(summaries.values(), ignore_index=True)
    summary = summary[["site", *[c for c in summary.columns if c != "site"]]]
    meta = {
        "model": smk.wildcards.model, "variant": variant, "n_layers": n_layers, "sites": list(smk.params.sites),
        "n_instances": len(instances), "selection": selection, "figure_segment": smk.params.segment,
        "undefined_cte": {site: len(keys) for site, keys in undefined.items()},
        "resid_source": smk.input.resid, "resid_meta_variant": read_parquet_metadata(smk.input.resid).get("variant"),
    }
    write_parquet(table, smk.output.table, meta)
    write_parquet(summary, smk.output.summary, meta)
    save_figure(plot_site_tracing({site: s.drop(columns="site") for site, s in summaries.items()}, smk.params.segment,
                                  smk.wildcards.model, variant), [smk.output.png, smk.output.pdf])


run_rule(snakemake, main)  # noqa: F821
