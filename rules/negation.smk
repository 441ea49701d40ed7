# The negation study: scores and segments (more analyses build on the same caches).

STUDY_TARGETS["negation"] += expand("results/negation/{model}/scores.parquet", model=MODELS)


rule compute_scores:
    input:
        text=expand("results/cache/{{model}}/text_{variant}.h5", variant=VARIANTS),
        positions=expand("results/datasets/{{model}}/valse_existence_{variant}_positions.parquet", variant=VARIANTS),
        image="results/cache/{model}/image.h5",
    output:
        scores="results/negation/{model}/scores.parquet",
        table1="results/negation/{model}/table1_accuracy.parquet",
        table2="results/negation/{model}/table2_segments.parquet",
        fig3_png=report("results/negation/{model}/figures/fig3_score_distribution.png", caption="../report/fig3.rst", category="Scores"),
        fig3_pdf="results/negation/{model}/figures/fig3_score_distribution.pdf",
    params:
        variants=VARIANTS,
        segments=NEGATION["segments"],
    group:
        LIGHT_GROUP
    log:
        rule_log("compute_scores", "{model}"),
    benchmark:
        rule_benchmark("compute_scores", "{model}")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/compute_scores.py"

