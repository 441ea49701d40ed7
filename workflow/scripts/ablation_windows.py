"""Rule script: single-colour ablation of windows of consecutive image-tower blocks."""

import pandas as pd

from clip_interp.io import write_parquet
from clip_interp.models import load_model
from clip_interp.negation.ablation_windows import plot_window_ablation, window_ablation_from_caches, window_summary
from clip_interp.plotting import save_figure
from clip_interp.workflow import run_rule


def main(smk, log):
    positions = pd.read_parquet(smk.input.positions, columns=["key", "negation"])
    model = load_model(smk.params.model, smk.params.device)
    log.info("variant %s, window sizes %s, components %s, %d image blocks", smk.params.variant,
             smk.params.window_sizes, smk.params.components, model.vision.n_layers)
    table, counts = window_ablation_from_caches(
        model, smk.input.image, smk.input.text, positions.set_index("key")["negation"], smk.params.window_sizes,
        components=smk.params.components, batch_size=smk.params.batch_size,
    )
    summary = window_summary(table)
    log.info("%s", counts)
    meta = {"model": smk.wildcards.model, "variant": smk.params.variant, "window_sizes": list(smk.params.window_sizes),
            "components": list(smk.params.components), "n_layers": model.vision.n_layers, **counts}
    write_parquet(table, smk.output.table, meta)
    write_parquet(summary, smk.output.summary, meta)
    save_figure(plot_window_ablation(summary, smk.wildcards.model), [smk.output.png, smk.output.pdf])


run_rule(snakemake, main)  # noqa: F821
