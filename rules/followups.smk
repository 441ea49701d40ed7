# The follow-up experiments the negation study proposed (beyond the study): pairs of positions patched
# together, linear probes, MHA vs MLP causal tracing, multi-layer image ablation windows, image covariates.
# Settings: negation.followups.

FOLLOWUPS = NEGATION["followups"]
FOLLOWUP_VARIANT = analysis_variant("followups")
FOLLOWUP_SEGMENT = FOLLOWUPS["segment"]
FOLLOWUP_DIR = "results/negation/{model}/followups"
FOLLOWUP_FIGURES = "results/negation/{model}/figures"

# Seconds per input row (cluster runtime, see common.smk): estimated from tools/benchmark_engine.py's ratios
# to the measured causal tracing and image ablation, not measured in a full-size run.
SECONDS_PER_ROW.update(
    pair_patching=3 * SECONDS_PER_ROW["causal_tracing"],
    site_tracing=2 * SECONDS_PER_ROW["causal_tracing"],
    ablation_windows=2 * SECONDS_PER_ROW["image_ablation"],
)

STUDY_TARGETS["negation"] += expand(
    [
        f"{FOLLOWUP_DIR}/{name}.parquet"
        for name in (
            "pair_patching",
            "pair_patching_summary",
            "site_tracing",
            "site_tracing_summary",
            "probes",
            "ablation_windows",
            "ablation_windows_summary",
            "image_covariates",
            "covariate_regression",
        )
    ]
    + [
        f"{FOLLOWUP_FIGURES}/followup_{name}.{ext}"
        for name in ("pair_patching", "site_tracing", "probes", "ablation_windows", "covariates")
        for ext in ("png", "pdf")
    ],
    model=MODELS,
)


rule pair_patching:
    input:
        positions=f"results/datasets/{{model}}/valse_existence_{FOLLOWUP_VARIANT}_positions.parquet",
        image="results/cache/{model}/image.h5",
        scores="results/negation/{model}/scores.parquet",
        model=model_files,
    output:
        table=f"{FOLLOWUP_DIR}/pair_patching.parquet",
        summary=f"{FOLLOWUP_DIR}/pair_patching_summary.parquet",
        png=report(
            f"{FOLLOWUP_FIGURES}/followup_pair_patching.png",
            caption="../report/followup_pair_patching.rst",
            category="Follow-ups",
        ),
        pdf=f"{FOLLOWUP_FIGURES}/followup_pair_patching.pdf",
    params:
        model=model_spec,
        variant=FOLLOWUP_VARIANT,
        segment=FOLLOWUP_SEGMENT,
        device=DEVICE,
        batch_size=TEXT_BATCH_SIZE,
    log:
        rule_log("pair_patching", "{model}"),
    benchmark:
        rule_benchmark("pair_patching", "{model}")
    threads: config["threads"]
    resources:
        **MODEL_RESOURCES,
        runtime=runtime_minutes("pair_patching", "positions"),
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/pair_patching.py"


rule site_tracing:
    input:
        positions=f"results/datasets/{{model}}/valse_existence_{FOLLOWUP_VARIANT}_positions.parquet",
        image="results/cache/{model}/image.h5",
        scores="results/negation/{model}/scores.parquet",
        resid=f"results/negation/{{model}}/causal_tracing_generic.parquet",
        model=model_files,
    output:
        table=f"{FOLLOWUP_DIR}/site_tracing.parquet",
        summary=f"{FOLLOWUP_DIR}/site_tracing_summary.parquet",
        png=report(
            f"{FOLLOWUP_FIGURES}/followup_site_tracing.png",
            caption="../report/followup_site_tracing.rst",
            category="Follow-ups",
        ),
        pdf=f"{FOLLOWUP_FIGURES}/followup_site_tracing.pdf",
    params:
        model=model_spec,
        variant=FOLLOWUP_VARIANT,
        segment=FOLLOWUP_SEGMENT,
        sites=FOLLOWUPS["site_tracing"]["sites"],
        device=DEVICE,
        batch_size=TEXT_BATCH_SIZE,
    log:
        rule_log("site_tracing", "{model}"),
    benchmark:
        rule_benchmark("site_tracing", "{model}")
    threads: config["threads"]
    resources:
        **MODEL_RESOURCES,
        runtime=runtime_minutes("site_tracing", "positions"),
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/site_tracing.py"


rule probes:
    input:
        positions=f"results/datasets/{{model}}/valse_existence_{FOLLOWUP_VARIANT}_positions.parquet",
        text=f"results/cache/{{model}}/text_{FOLLOWUP_VARIANT}.h5",
    output:
        table=f"{FOLLOWUP_DIR}/probes.parquet",
        png=report(
            f"{FOLLOWUP_FIGURES}/followup_probes.png",
            caption="../report/followup_probes.rst",
            category="Follow-ups",
        ),
        pdf=f"{FOLLOWUP_FIGURES}/followup_probes.pdf",
    params:
        variant=FOLLOWUP_VARIANT,
        n_splits=FOLLOWUPS["probes"]["n_splits"],
        C=FOLLOWUPS["probes"]["C"],
        seed=FOLLOWUPS["probes"]["seed"],
    log:
        rule_log("probes", "{model}"),
    benchmark:
        rule_benchmark("probes", "{model}")
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/probes.py"


rule ablation_windows:
    input:
        image="results/cache/{model}/image.h5",
        text=f"results/cache/{{model}}/text_{FOLLOWUP_VARIANT}.h5",
        positions=f"results/datasets/{{model}}/valse_existence_{FOLLOWUP_VARIANT}_positions.parquet",
        model=model_files,
    output:
        table=f"{FOLLOWUP_DIR}/ablation_windows.parquet",
        summary=f"{FOLLOWUP_DIR}/ablation_windows_summary.parquet",
        png=report(
            f"{FOLLOWUP_FIGURES}/followup_ablation_windows.png",
            caption="../report/followup_ablation_windows.rst",
            category="Follow-ups",
        ),
        pdf=f"{FOLLOWUP_FIGURES}/followup_ablation_windows.pdf",
    params:
        model=model_spec,
        variant=FOLLOWUP_VARIANT,
        window_sizes=FOLLOWUPS["ablation_windows"]["window_sizes"],
        components=FOLLOWUPS["ablation_windows"]["components"],
        device=DEVICE,
        batch_size=IMAGE_BATCH_SIZE,
    log:
        rule_log("ablation_windows", "{model}"),
    benchmark:
        rule_benchmark("ablation_windows", "{model}")
    threads: config["threads"]
    resources:
        **MODEL_RESOURCES,
        runtime=runtime_minutes("ablation_windows", "positions"),
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/ablation_windows.py"


rule image_covariates:
    input:
        preliminary="results/negation/{model}/preliminary.parquet",
        table=f"results/datasets/valse_existence_{analysis_variant('preliminary')}.parquet",
        images=images_dir(),
    output:
        covariates=f"{FOLLOWUP_DIR}/image_covariates.parquet",
        regression=f"{FOLLOWUP_DIR}/covariate_regression.parquet",
        png=report(
            f"{FOLLOWUP_FIGURES}/followup_covariates.png",
            caption="../report/followup_covariates.rst",
            category="Follow-ups",
        ),
        pdf=f"{FOLLOWUP_FIGURES}/followup_covariates.pdf",
    params:
        alpha=FOLLOWUPS["covariates"]["alpha"],
    group:
        LIGHT_GROUP
    log:
        rule_log("image_covariates", "{model}"),
    benchmark:
        rule_benchmark("image_covariates", "{model}")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/image_covariates.py"
