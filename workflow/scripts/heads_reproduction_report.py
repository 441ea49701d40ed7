"""Rule script: the heads reproduction report, what CLIP-InterpreT publishes beside what this run computes."""

from clip_interp.heads.paper_values import load_paper_values
from clip_interp.heads.reproduction import (
    paper_models_configured,
    plot_reproduction,
    read_inputs,
    reproduction_table,
    summary_line,
)
from clip_interp.io import write_parquet
from clip_interp.plotting import save_figure
from clip_interp.sources import sha256_of
from clip_interp.workflow import run_rule


def main(smk, log):
    paper = load_paper_values(smk.input.paper_values)
    inputs = read_inputs(models=smk.params.models, scores=list(smk.input.scores), label_keys=smk.params.label_keys,
                         labels=list(smk.input.labels), taxonomy_path=smk.input.taxonomy,
                         published_path=smk.input.get("published"), specs=smk.params.specs)
    table = reproduction_table(paper, inputs)
    models = paper_models_configured(table)
    if not models:
        log.warning("no configured model is one of the paper's (%s): the paper's values are empty for them and its "
                    "claims are not evaluable on ours", ", ".join(smk.params.models))
    for row in table.itertuples():
        log.info("%-80s %-18s %s", row.key, row.status, row.note)
    log.info("%s", summary_line(table))
    write_parquet(table, smk.output.table, {
        "models": list(smk.params.models), "paper_models": models,
        "paper_values": smk.params.paper_values_name, "paper_values_sha256": sha256_of(smk.input.paper_values),
        "statement": ("the paper's models: " + ", ".join(models) if models else
                      "NOT the paper's models: the paper's values are empty for them, its claims not evaluable"),
    })
    save_figure(plot_reproduction(table), [smk.output.png, smk.output.pdf])


run_rule(snakemake, main)  # noqa: F821
