# The offline demo: a synthetic existence benchmark and a toy CLIP trained on it. With the decomposition
# study, also its synthetic sets; the Waterbirds-like training pairs join train.jsonl (one toy CLIP for both).

SYNTHETIC_DECOMPOSITION = "results/synthetic/decomposition"
SYNTHETIC_DECOMPOSITION_OUTPUTS = (
    dict(
        classification=directory(f"{SYNTHETIC_DECOMPOSITION}/classification"),
        classification_labels=f"{SYNTHETIC_DECOMPOSITION}/classification_labels.txt",
        class_names=f"{SYNTHETIC_DECOMPOSITION}/class_names.txt",
        templates=f"{SYNTHETIC_DECOMPOSITION}/templates.txt",
        segmentation=f"{SYNTHETIC_DECOMPOSITION}/segmentation.mat",
        waterbirds=directory(f"{SYNTHETIC_DECOMPOSITION}/waterbirds"),
        descriptions=f"{SYNTHETIC_DECOMPOSITION}/descriptions.txt",
        place_descriptions=f"{SYNTHETIC_DECOMPOSITION}/place_descriptions.txt",
    )
    if "decomposition" in STUDIES
    else {}
)


rule generate_synthetic_benchmark:
    output:
        valse="results/synthetic/existence.json",
        images=directory("results/synthetic/images"),
        masks=directory("results/synthetic/masks"),
        train="results/synthetic/train.jsonl",
        **SYNTHETIC_DECOMPOSITION_OUTPUTS,
    params:
        synthetic=config["demo"]["synthetic"],
        decomposition=bool(SYNTHETIC_DECOMPOSITION_OUTPUTS),
    log:
        rule_log("generate_synthetic_benchmark"),
    benchmark:
        rule_benchmark("generate_synthetic_benchmark")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/generate_synthetic_benchmark.py"


# The demo's second TEXTSPAN pool (single words), apart from the sets above so that adding it retrains nothing.
rule demo_word_pool:
    output:
        words=f"{SYNTHETIC_DECOMPOSITION}/words.txt",
    log:
        rule_log("demo_word_pool"),
    benchmark:
        rule_benchmark("demo_word_pool")
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/demo_word_pool.py"


rule train_toy_clip:
    input:
        valse="results/synthetic/existence.json",
        images="results/synthetic/images",
        train="results/synthetic/train.jsonl",
    output:
        config="results/models/toy-clip/ToyCLIP.json",
        checkpoint="results/models/toy-clip/toy_clip.pt",
        metrics="results/models/toy-clip/training_metrics.json",
    params:
        toy_clip=config["demo"]["toy_clip"],
    log:
        rule_log("train_toy_clip"),
    benchmark:
        rule_benchmark("train_toy_clip")
    threads: config["threads"]
    resources:
        mem_mb=4000,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/train_toy_clip.py"
