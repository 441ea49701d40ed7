# Preliminary analyses: subject size, caption-foil similarity and sentence length against the score d
# (Table 3, Figures 6 and 7).

SUBJECT_SIZE = NEGATION["subject_size"]
SUBJECT_SIZE_BY_CLIPSEG = SUBJECT_SIZE["source"] == "clipseg"

STUDY_TARGETS["negation"] += ["results/datasets/subject_size.parquet"]
STUDY_TARGETS["negation"] += expand(
    "results/negation/{model}/{name}",
    model=MODELS,
    name=[
        "preliminary.parquet",
        "table3_correlations.parquet",
        "table3_correlations_foil.parquet",
        "length_accuracy.parquet",
        "size_accuracy.parquet",
        "figures/fig6_similarity_vs_score.png",
        "figures/fig6_similarity_vs_score.pdf",
        "figures/fig7_subject_size.png",
        "figures/fig7_subject_size.pdf",
    ],
)


# True masks where the benchmark has them (synthetic); a local CLIPSeg folder, so that replacing it re-runs.
SUBJECT_SIZE_INPUTS = {}
if SYNTHETIC:
    SUBJECT_SIZE_INPUTS.update(valse=valse_json(), masks="results/synthetic/masks")
elif not SUBJECT_SIZE_BY_CLIPSEG:
    raise WorkflowError(
        "negation.subject_size.source is 'mask', but only the synthetic benchmark has subject masks; "
        "set negation.subject_size.source to clipseg"
    )
if SUBJECT_SIZE_BY_CLIPSEG and os.path.isdir(SUBJECT_SIZE["clipseg_model"]):
    SUBJECT_SIZE_INPUTS["clipseg"] = SUBJECT_SIZE["clipseg_model"]


rule subject_size:
    input:
        **SUBJECT_SIZE_INPUTS,
        table=f"results/datasets/valse_existence_{analysis_variant('preliminary')}.parquet",
        images=images_dir(),
    output:
        "results/datasets/subject_size.parquet",
    params:
        source=SUBJECT_SIZE["source"],
        clipseg_model=SUBJECT_SIZE["clipseg_model"] if SUBJECT_SIZE_BY_CLIPSEG else None,
        threshold=SUBJECT_SIZE["threshold"],
        spacy_model=NEGATION["spacy_model"],
        # CLIPSeg's device and image batch size; unused (None) with the true masks.
        device=DEVICE if SUBJECT_SIZE_BY_CLIPSEG else None,
        batch_size=IMAGE_BATCH_SIZE if SUBJECT_SIZE_BY_CLIPSEG else None,
    log:
        rule_log("subject_size"),
    benchmark:
        rule_benchmark("subject_size")
    threads: config["threads"] if SUBJECT_SIZE_BY_CLIPSEG else 1
    resources:
        **(MODEL_RESOURCES if SUBJECT_SIZE_BY_CLIPSEG else dict(mem_mb=2000)),
        runtime=runtime_minutes("subject_size", "table"),
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/subject_size.py"


rule preliminary_analyses:
    input:
        scores="results/negation/{model}/scores.parquet",
        text=f"results/cache/{{model}}/text_{analysis_variant('preliminary')}.h5",
        positions=f"results/datasets/{{model}}/valse_existence_{analysis_variant('preliminary')}_positions.parquet",
        sizes="results/datasets/subject_size.parquet",
    output:
        instances="results/negation/{model}/preliminary.parquet",
        table3="results/negation/{model}/table3_correlations.parquet",
        table3_foil="results/negation/{model}/table3_correlations_foil.parquet",
        length_accuracy="results/negation/{model}/length_accuracy.parquet",
        size_accuracy="results/negation/{model}/size_accuracy.parquet",
        fig6_png=report(
            "results/negation/{model}/figures/fig6_similarity_vs_score.png",
            caption="../report/fig6.rst",
            category="Preliminary analyses",
        ),
        fig6_pdf="results/negation/{model}/figures/fig6_similarity_vs_score.pdf",
        fig7_png=report(
            "results/negation/{model}/figures/fig7_subject_size.png",
            caption="../report/fig7.rst",
            category="Preliminary analyses",
        ),
        fig7_pdf="results/negation/{model}/figures/fig7_subject_size.pdf",
    params:
        variant=analysis_variant("preliminary"),
        min_size=NEGATION["preliminary"]["min_size"],
    group:
        LIGHT_GROUP
    log:
        rule_log("preliminary_analyses", "{model}"),
    benchmark:
        rule_benchmark("preliminary_analyses", "{model}")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/preliminary_analyses.py"
