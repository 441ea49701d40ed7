# The offline demo: a synthetic existence benchmark and a toy CLIP trained on it.


rule generate_synthetic_benchmark:
    output:
        valse="results/synthetic/existence.json",
        images=directory("results/synthetic/images"),
        masks=directory("results/synthetic/masks"),
        train="results/synthetic/train.jsonl",
    params:
        synthetic=config["demo"]["synthetic"],
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
