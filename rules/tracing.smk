# Causal tracing of negation in the text tower (Figure 8): effects per layer and token position.

CAUSAL_TRACING_VARIANT = analysis_variant("causal_tracing")

STUDY_TARGETS["negation"] += expand(
    [
        "results/negation/{model}/causal_tracing.parquet",
        "results/negation/{model}/causal_tracing_generic.parquet",
        "results/negation/{model}/causal_tracing_summary.parquet",
        "results/negation/{model}/localisation.parquet",
        "results/negation/{model}/figures/fig8_causal_tracing.png",
        "results/negation/{model}/figures/fig8_causal_tracing.pdf",
        "results/negation/{model}/figures/fig8_causal_tracing_all.png",
        "results/negation/{model}/figures/fig8_causal_tracing_all.pdf",
        "results/negation/{model}/figures/fig8_causal_tracing_by_segment.png",
        "results/negation/{model}/figures/fig8_causal_tracing_by_segment.pdf",
    ],
    model=MODELS,
)


rule causal_tracing:
    input:
        positions=f"results/datasets/{{model}}/valse_existence_{CAUSAL_TRACING_VARIANT}_positions.parquet",
        image="results/cache/{model}/image.h5",
        model=model_files,
    output:
        effects="results/negation/{model}/causal_tracing.parquet",
        generic="results/negation/{model}/causal_tracing_generic.parquet",
    params:
        model=model_spec,
        variant=CAUSAL_TRACING_VARIANT,
        device=DEVICE,
        batch_size=TEXT_BATCH_SIZE,
    log:
        rule_log("causal_tracing", "{model}"),
    benchmark:
        rule_benchmark("causal_tracing", "{model}")
    threads: config["threads"]
    resources:
        **MODEL_RESOURCES,
        runtime=runtime_minutes("causal_tracing", "positions"),
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/causal_tracing.py"


rule causal_tracing_summary:
    input:
        generic="results/negation/{model}/causal_tracing_generic.parquet",
        scores="results/negation/{model}/scores.parquet",
    output:
        summary="results/negation/{model}/causal_tracing_summary.parquet",
        localisation="results/negation/{model}/localisation.parquet",
        fig8_png=report(
            "results/negation/{model}/figures/fig8_causal_tracing.png",
            caption="../report/fig8.rst",
            category="Causal tracing",
        ),
        fig8_pdf="results/negation/{model}/figures/fig8_causal_tracing.pdf",
        fig8_all_png=report(
            "results/negation/{model}/figures/fig8_causal_tracing_all.png",
            caption="../report/fig8_all.rst",
            category="Causal tracing",
        ),
        fig8_all_pdf="results/negation/{model}/figures/fig8_causal_tracing_all.pdf",
        fig8_segments_png=report(
            "results/negation/{model}/figures/fig8_causal_tracing_by_segment.png",
            caption="../report/fig8_segments.rst",
            category="Causal tracing",
        ),
        fig8_segments_pdf="results/negation/{model}/figures/fig8_causal_tracing_by_segment.pdf",
    params:
        variant=CAUSAL_TRACING_VARIANT,
        segments=NEGATION["segments"],
    group:
        LIGHT_GROUP
    log:
        rule_log("causal_tracing_summary", "{model}"),
    benchmark:
        rule_benchmark("causal_tracing_summary", "{model}")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/causal_tracing_summary.py"
