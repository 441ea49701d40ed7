# The heads reproduction report: CLIP-InterpreT's published scores, claims and figure heads
# (resources/heads/paper_values.yaml) beside this run's, for every configured model and labeller.

STUDY_TARGETS["heads"] += [
    "results/heads/reproduction.parquet",
    "results/heads/figures/reproduction.png",
    "results/heads/figures/reproduction.pdf",
]
# Beside the workflow, so that a run in another working directory (`--directory`) finds it; the same file is
# clip_interp.heads.published.PAPER_SCORES.
HEADS_PAPER_VALUES = os.path.join(workflow.basedir, "resources", "heads", "paper_values.yaml")


rule heads_reproduction_report:
    input:
        unpack(heads_report_published_input),
        paper_values=HEADS_PAPER_VALUES,
        taxonomy=HEADS["taxonomy"],
        scores=expand("results/heads/{model}/scores.parquet", model=MODELS),
        labels=[path for _, _, path in heads_report_label_tables()],
    output:
        table="results/heads/reproduction.parquet",
        png=report(
            "results/heads/figures/reproduction.png",
            caption="../report/heads_reproduction.rst",
            category="Head properties",
            subcategory="cross-model",
        ),
        pdf="results/heads/figures/reproduction.pdf",
    params:
        models=MODELS,
        label_keys=[[model, labeller] for model, labeller, _ in heads_report_label_tables()],
        specs={model: config["models"][model] for model in MODELS},
        paper_values_name=os.path.relpath(HEADS_PAPER_VALUES, workflow.basedir),
        published_fingerprint=heads_report_published_fingerprint,
    log:
        rule_log("heads_reproduction_report"),
    benchmark:
        rule_benchmark("heads_reproduction_report")
    threads: 1
    resources:
        mem_mb=2000,
    group:
        LIGHT_GROUP
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/heads_reproduction_report.py"
