# Activation caches: per-layer activations of both towers, in HDF5.

STUDY_TARGETS["negation"] += expand("results/cache/{model}/text_{variant}.h5", model=MODELS, variant=VARIANTS)
STUDY_TARGETS["negation"] += expand("results/cache/{model}/image.h5", model=MODELS)


rule cache_text_activations:
    input:
        table="results/datasets/{model}/valse_existence_{variant}_positions.parquet",
        model=model_files,
    output:
        "results/cache/{model}/text_{variant}.h5",
    params:
        model=model_spec,
        dtype=config["cache"]["dtype"],
        device=DEVICE,
        batch_size=TEXT_BATCH_SIZE,
    log:
        rule_log("cache_text_activations", "{model}", "{variant}"),
    benchmark:
        rule_benchmark("cache_text_activations", "{model}", "{variant}")
    threads: config["threads"]
    resources:
        **MODEL_RESOURCES,
        runtime=runtime_minutes("cache_text_activations", "table"),
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/cache_text_activations.py"


rule cache_image_activations:
    input:
        table="results/datasets/valse_existence_standard.parquet",
        images=images_dir(),
        model=model_files,
    output:
        "results/cache/{model}/image.h5",
    params:
        model=model_spec,
        dtype=config["cache"]["dtype"],
        device=DEVICE,
        batch_size=IMAGE_BATCH_SIZE,
    log:
        rule_log("cache_image_activations", "{model}"),
    benchmark:
        rule_benchmark("cache_image_activations", "{model}")
    threads: config["threads"]
    resources:
        **MODEL_RESOURCES,
        runtime=runtime_minutes("cache_image_activations", "table"),
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/cache_image_activations.py"


rule cache_cannot_activations:
    input:
        table="results/datasets/{model}/cannot_pairs.parquet",
        model=model_files,
    output:
        "results/cache/{model}/text_cannot.h5",
    params:
        model=model_spec,
        dtype=config["cache"]["dtype"],
        device=DEVICE,
        batch_size=TEXT_BATCH_SIZE,
    log:
        rule_log("cache_cannot_activations", "{model}"),
    benchmark:
        rule_benchmark("cache_cannot_activations", "{model}")
    threads: config["threads"]
    resources:
        **MODEL_RESOURCES,
        runtime=runtime_minutes("cache_cannot_activations", "table"),
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/cache_cannot_activations.py"
