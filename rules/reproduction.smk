# The reproduction report: every number the negation study publishes (resources/negation_published.yaml)
# beside ours, with the difference and whether it lies within the tolerance.

STUDY_TARGETS["negation"] += expand(
    [
        "results/negation/{model}/reproduction.parquet",
        "results/negation/{model}/figures/reproduction.png",
        "results/negation/{model}/figures/reproduction.pdf",
    ],
    model=MODELS,
)
# Beside the workflow, so that a run in another working directory (`--directory`) finds it.
PUBLISHED_VALUES = os.path.join(workflow.basedir, "resources", "negation_published.yaml")


rule reproduction_report:
    input:
        published=PUBLISHED_VALUES,
        scores="results/negation/{model}/scores.parquet",
        table1="results/negation/{model}/table1_accuracy.parquet",
        table2="results/negation/{model}/table2_segments.parquet",
        preliminary="results/negation/{model}/preliminary.parquet",
        table3="results/negation/{model}/table3_correlations.parquet",
        size_accuracy="results/negation/{model}/size_accuracy.parquet",
        selectivity_heads="results/negation/{model}/selectivity_heads.parquet",
        iae_averages="results/negation/{model}/image_ablation_iae_averages.parquet",
        cannot_report="results/datasets/{model}/cannot_pairs.report.json",
    output:
        table="results/negation/{model}/reproduction.parquet",
        png=report(
            "results/negation/{model}/figures/reproduction.png",
            caption="../report/reproduction.rst",
            category="Reproduction",
        ),
        pdf="results/negation/{model}/figures/reproduction.pdf",
    params:
        model=model_spec,
        benchmark=NEGATION["benchmark"],
        published_name=os.path.relpath(PUBLISHED_VALUES, workflow.basedir),
    group:
        LIGHT_GROUP
    log:
        rule_log("reproduction_report", "{model}"),
    benchmark:
        rule_benchmark("reproduction_report", "{model}")
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/reproduction_report.py"
