# Image ablation: each image-tower layer's MHA or MLP output replaced by the single-colour image's.

ABLATION_VARIANT = analysis_variant("image_ablation")

STUDY_TARGETS["negation"] += expand(
    "results/negation/{model}/{table}.parquet",
    model=MODELS,
    table=["image_ablation", "image_ablation_summary", "image_ablation_iae_averages"],
)
STUDY_TARGETS["negation"] += expand(
    "results/negation/{model}/figures/{figure}.{ext}",
    model=MODELS,
    figure=[
        "fig12_mha_ablation",
        "fig12_mha_ablation_all",
        "fig12_mha_ablation_by_segment",
        "fig13_mlp_ablation",
        "fig13_mlp_ablation_all",
        "fig13_mlp_ablation_by_segment",
        "fig14_mha_vs_mlp",
        "fig14_mha_vs_mlp_all",
        "fig14_mha_vs_mlp_by_segment",
        "ablation_caption_foil_scores",
    ],
    ext=["png", "pdf"],
)


rule image_ablation:
    input:
        image="results/cache/{model}/image.h5",
        text=f"results/cache/{{model}}/text_{ABLATION_VARIANT}.h5",
        positions=f"results/datasets/{{model}}/valse_existence_{ABLATION_VARIANT}_positions.parquet",
        model=model_files,
    output:
        "results/negation/{model}/image_ablation.parquet",
    params:
        model=model_spec,
        variant=ABLATION_VARIANT,
        components=NEGATION["image_ablation"]["components"],
        device=DEVICE,
        batch_size=IMAGE_BATCH_SIZE,
    log:
        rule_log("image_ablation", "{model}"),
    benchmark:
        rule_benchmark("image_ablation", "{model}")
    threads: config["threads"]
    resources:
        **MODEL_RESOURCES,
        runtime=runtime_minutes("image_ablation", "positions"),
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/image_ablation.py"


# Figures 12-14 show the study's correct segment; `_all` pools every instance, `_by_segment` splits them.
# Figures of a component missing from negation.image_ablation.components are drawn as a panel saying so,
# so the outputs are the same for every configuration.
rule image_ablation_summary:
    input:
        table="results/negation/{model}/image_ablation.parquet",
    output:
        summary="results/negation/{model}/image_ablation_summary.parquet",
        averages="results/negation/{model}/image_ablation_iae_averages.parquet",
        fig12_png=report(
            "results/negation/{model}/figures/fig12_mha_ablation.png",
            caption="../report/fig12.rst",
            category="Image ablation",
        ),
        fig12_pdf="results/negation/{model}/figures/fig12_mha_ablation.pdf",
        fig12_all_png=report(
            "results/negation/{model}/figures/fig12_mha_ablation_all.png",
            caption="../report/fig12_all.rst",
            category="Image ablation",
        ),
        fig12_all_pdf="results/negation/{model}/figures/fig12_mha_ablation_all.pdf",
        fig12_segments_png=report(
            "results/negation/{model}/figures/fig12_mha_ablation_by_segment.png",
            caption="../report/fig12_segments.rst",
            category="Image ablation",
        ),
        fig12_segments_pdf="results/negation/{model}/figures/fig12_mha_ablation_by_segment.pdf",
        fig13_png=report(
            "results/negation/{model}/figures/fig13_mlp_ablation.png",
            caption="../report/fig13.rst",
            category="Image ablation",
        ),
        fig13_pdf="results/negation/{model}/figures/fig13_mlp_ablation.pdf",
        fig13_all_png=report(
            "results/negation/{model}/figures/fig13_mlp_ablation_all.png",
            caption="../report/fig13_all.rst",
            category="Image ablation",
        ),
        fig13_all_pdf="results/negation/{model}/figures/fig13_mlp_ablation_all.pdf",
        fig13_segments_png=report(
            "results/negation/{model}/figures/fig13_mlp_ablation_by_segment.png",
            caption="../report/fig13_segments.rst",
            category="Image ablation",
        ),
        fig13_segments_pdf="results/negation/{model}/figures/fig13_mlp_ablation_by_segment.pdf",
        fig14_png=report(
            "results/negation/{model}/figures/fig14_mha_vs_mlp.png",
            caption="../report/fig14.rst",
            category="Image ablation",
        ),
        fig14_pdf="results/negation/{model}/figures/fig14_mha_vs_mlp.pdf",
        fig14_all_png=report(
            "results/negation/{model}/figures/fig14_mha_vs_mlp_all.png",
            caption="../report/fig14_all.rst",
            category="Image ablation",
        ),
        fig14_all_pdf="results/negation/{model}/figures/fig14_mha_vs_mlp_all.pdf",
        fig14_segments_png=report(
            "results/negation/{model}/figures/fig14_mha_vs_mlp_by_segment.png",
            caption="../report/fig14_segments.rst",
            category="Image ablation",
        ),
        fig14_segments_pdf="results/negation/{model}/figures/fig14_mha_vs_mlp_by_segment.pdf",
        scores_png=report(
            "results/negation/{model}/figures/ablation_caption_foil_scores.png",
            caption="../report/ablation_scores.rst",
            category="Image ablation",
        ),
        scores_pdf="results/negation/{model}/figures/ablation_caption_foil_scores.pdf",
    params:
        segments=NEGATION["segments"],
    group:
        LIGHT_GROUP
    log:
        rule_log("image_ablation_summary", "{model}"),
    benchmark:
        rule_benchmark("image_ablation_summary", "{model}")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/image_ablation_summary.py"
