"""Rule script: the reproduction report, every published number of the negation study beside ours."""

from clip_interp.io import write_parquet
from clip_interp.negation.reproduction import (
    load_published,
    plot_reproduction,
    read_sources,
    reproduction_table,
    setup_differences,
)
from clip_interp.plotting import save_figure
from clip_interp.sources import sha256_of
from clip_interp.workflow import run_rule


def main(smk, log):
    model = smk.wildcards.model
    published = load_published(smk.input.published)
    differences = setup_differences(smk.params.model, smk.params.benchmark)
    if differences:
        log.warning("this run is not the study's set-up (OpenAI ViT-B/32 on VALSE existence), so its numbers are "
                    "not expected to match the published ones: %s", "; ".join(differences))
    table = reproduction_table(published, read_sources(smk.input))
    for row in table.itertuples():
        log.info("%-52s published %9.3f ours %9.3f difference %9.3f within %s%s", row.key, row.published, row.ours,
                 row.difference, row.within_tolerance, f" ({row.note})" if row.note else "")
    within = table["within_tolerance"].dropna()
    log.info("%d of %d published values within tolerance; %d not computed", int(within.sum()), len(table),
             len(table) - len(within))
    write_parquet(table, smk.output.table, {
        "model": model, "study_setup": not differences, "setup_differences": differences,
        "published_values": smk.params.published_name,
        "published_values_sha256": sha256_of(smk.input.published),
        "statement": ("the study's set-up" if not differences else
                      "NOT the study's model and data: the numbers are not expected to match"),
    })
    save_figure(plot_reproduction(table, model, differences), [smk.output.png, smk.output.pdf])


run_rule(snakemake, main)  # noqa: F821
