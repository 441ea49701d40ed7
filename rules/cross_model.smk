# Comparison of the models the config lists: one line per model.

STUDY_TARGETS["negation"] += [
    "results/cross_model/layer_profiles.parquet",
    "results/cross_model/figures/fig_cross_model_layers.png",
]


rule cross_model_profiles:
    input:
        localisation=expand("results/negation/{model}/localisation.parquet", model=MODELS),
        selectivity=expand("results/negation/{model}/selectivity_layers.parquet", model=MODELS),
    output:
        table="results/cross_model/layer_profiles.parquet",
        png=report(
            "results/cross_model/figures/fig_cross_model_layers.png",
            caption="../report/cross_model.rst",
            category="Across models",
        ),
        pdf="results/cross_model/figures/fig_cross_model_layers.pdf",
    params:
        models=MODELS,
    group:
        LIGHT_GROUP
    log:
        rule_log("cross_model_profiles"),
    benchmark:
        rule_benchmark("cross_model_profiles")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/cross_model_profiles.py"
