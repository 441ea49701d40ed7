# The decomposition study (Gandelsman et al., ICLR 2024): sharded per-image terms of the image embedding,
# then mean-ablation, TEXTSPAN, zero-shot segmentation, Waterbirds, per-head neighbours and spatial maps.

DECOMPOSITION_FIGURES = {
    "zero_shot": "accuracy_vs_ablated_layers",
    "textspan": "head_cards",
    "textspan_sweep": "textspan_sweep",
    "segmentation": "segmentation_examples",
    "waterbirds": "waterbirds_groups",
    "neighbours": "neighbour_grids",
    "spatial_maps": "spatial_maps",
}

STUDY_TARGETS["decomposition"] += expand(
    "results/decomposition/{model}/{name}",
    model=MODELS,
    name=[
        "zero_shot_ablation.parquet",
        "textspan.parquet",
        "textspan_reconstruction.parquet",
        "textspan_sweep.parquet",
        "segmentation.parquet",
        "waterbirds.parquet",
        "waterbirds_heads.parquet",
        "neighbours.parquet",
        "spatial_maps.parquet",
    ]
    + [f"figures/{f}.{ext}" for f in DECOMPOSITION_FIGURES.values() for ext in ("png", "pdf")],
)


wildcard_constraints:
    imageset="|".join(IMAGE_SETS),
    shard=r"\d+",

# The fetches need the internet, which compute nodes often lack: they run where Snakemake runs.
localrules:
    fetch_decomposition_source,
    extract_waterbirds,


DECOMPOSITION_KINDS = {
    "segmentation": "binary",
    "waterbirds": "binary",
    "descriptions": "binary",
    "words": "binary",
    "place_descriptions": "binary",
    "class_names": "binary",
    "templates": "binary",
    "classification_labels": "binary",
}


use rule fetch_source as fetch_decomposition_source with:
    output:
        "results/raw/decomposition/{name}",
    wildcard_constraints:
        name="|".join(DECOMPOSITION_KINDS),
    params:
        source=lambda wildcards: DECOMPOSITION_SOURCES[wildcards.name],
        name=lambda wildcards: f"decomposition.sources.{wildcards.name}",
        kind=lambda wildcards: DECOMPOSITION_KINDS[wildcards.name],
    log:
        rule_log("fetch_decomposition_source", "{name}"),
    benchmark:
        rule_benchmark("fetch_decomposition_source", "{name}")


rule extract_waterbirds:
    input:
        archive=source_path("decomposition", "waterbirds"),
    output:
        directory("results/raw/decomposition/waterbirds_extracted"),
    params:
        fingerprint=source_fingerprint("decomposition", "waterbirds"),
    log:
        rule_log("extract_waterbirds"),
    benchmark:
        rule_benchmark("extract_waterbirds")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow/scripts/extract_waterbirds.py"


checkpoint decomposition_image_list:
    input:
        unpack(image_list_inputs),
    output:
        table="results/decomposition/datasets/{imageset}.parquet",
    params:
        split=DECOMPOSITION["spurious"]["split"],
        fingerprint=lambda wildcards: (
            source_fingerprint("decomposition", "waterbirds")(wildcards)
            if wildcards.imageset == "waterbirds"
            else source_fingerprint("decomposition", "classification_images")(wildcards)
        ),
    log:
        rule_log("decomposition_image_list", "{imageset}"),
    benchmark:
        rule_benchmark("decomposition_image_list", "{imageset}")
    threads: 1
    resources:
        mem_mb=2000,
    group:
        PREPARATION_GROUP
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/decomposition_image_list.py"


rule decompose_shard:
    input:
        table="results/decomposition/datasets/{imageset}.parquet",
        model=model_files,
    output:
        "results/decomposition/{model}/store/{imageset}/shard_{shard}.h5",
    params:
        model=model_spec,
        shard_size=DECOMPOSITION["shard_size"],
        convention=DECOMPOSITION["convention"],
        dtype=DECOMPOSITION["dtype"],
        units=STORE_UNITS,
        device=DEVICE,
        batch_size=IMAGE_BATCH_SIZE,
    log:
        rule_log("decompose_shard", "{model}", "{imageset}", "{shard}"),
    benchmark:
        rule_benchmark("decompose_shard", "{model}", "{imageset}", "{shard}")
    threads: config["threads"]
    resources:
        **MODEL_RESOURCES,
        # ViT-B/16 on 2 CPU cores: about 0.6 s per image (README, decomposition benchmark); x3, plus start-up.
        runtime=lambda wildcards, attempt: attempt * (10 + int(DECOMPOSITION["shard_size"] * 1.8 // 60) + 1),
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/decompose_shard.py"


rule gather_decomposition:
    input:
        parts=shard_parts,
        table="results/decomposition/datasets/{imageset}.parquet",
    output:
        "results/decomposition/{model}/store/{imageset}.h5",
    params:
        shard_size=DECOMPOSITION["shard_size"],
    log:
        rule_log("gather_decomposition", "{model}", "{imageset}"),
    benchmark:
        rule_benchmark("gather_decomposition", "{model}", "{imageset}")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/gather_decomposition.py"


rule decomposition_text:
    input:
        unpack(text_inputs),
    output:
        classification=f"{DECOMPOSITION_OUT}/text/classifier_classification.npy",
        waterbirds=f"{DECOMPOSITION_OUT}/text/classifier_waterbirds.npy",
        descriptions=f"{DECOMPOSITION_OUT}/text/descriptions.npy",
        words=f"{DECOMPOSITION_OUT}/text/words.npy",
        place_descriptions=f"{DECOMPOSITION_OUT}/text/place_descriptions.npy",
    params:
        model=model_spec,
        waterbirds_classes=DECOMPOSITION["spurious"]["class_names"],
        waterbirds_templates=DECOMPOSITION["spurious"]["templates"],
        device=DEVICE,
        batch_size=TEXT_BATCH_SIZE,
    log:
        rule_log("decomposition_text", "{model}"),
    benchmark:
        rule_benchmark("decomposition_text", "{model}")
    threads: config["threads"]
    resources:
        **MODEL_RESOURCES,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/decomposition_text.py"


rule zero_shot_ablation:
    input:
        store=f"{DECOMPOSITION_OUT}/store/classification.h5",
        classifier=f"{DECOMPOSITION_OUT}/text/classifier_classification.npy",
    output:
        table=f"{DECOMPOSITION_OUT}/zero_shot_ablation.parquet",
        png=report(
            f"{DECOMPOSITION_OUT}/figures/accuracy_vs_ablated_layers.png",
            caption="../report/decomposition_accuracy_vs_ablated_layers.rst",
            category="Decomposition",
            subcategory="{model}",
        ),
        pdf=f"{DECOMPOSITION_OUT}/figures/accuracy_vs_ablated_layers.pdf",
    params:
        paper_rows=DECOMPOSITION["ablation"]["paper_rows"],
    log:
        rule_log("zero_shot_ablation", "{model}"),
    benchmark:
        rule_benchmark("zero_shot_ablation", "{model}")
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/zero_shot_ablation.py"


rule textspan:
    input:
        store=f"{DECOMPOSITION_OUT}/store/classification.h5",
        classifier=f"{DECOMPOSITION_OUT}/text/classifier_classification.npy",
        texts=f"{DECOMPOSITION_OUT}/text/descriptions.npy",
        pool=source_path("decomposition", "descriptions"),
    output:
        table=f"{DECOMPOSITION_OUT}/textspan.parquet",
        reconstruction=f"{DECOMPOSITION_OUT}/textspan_reconstruction.parquet",
        png=report(
            f"{DECOMPOSITION_OUT}/figures/head_cards.png",
            caption="../report/decomposition_head_cards.rst",
            category="Decomposition",
            subcategory="{model}",
        ),
        pdf=f"{DECOMPOSITION_OUT}/figures/head_cards.pdf",
    params:
        textspan=DECOMPOSITION["textspan"],
    log:
        rule_log("textspan", "{model}"),
    benchmark:
        rule_benchmark("textspan", "{model}")
    threads: config["threads"]
    resources:
        mem_mb=8000,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/decomposition_textspan.py"


rule textspan_sweep:
    input:
        unpack(sweep_pool_embeddings),
        store=f"{DECOMPOSITION_OUT}/store/classification.h5",
        classifier=f"{DECOMPOSITION_OUT}/text/classifier_classification.npy",
    output:
        table=f"{DECOMPOSITION_OUT}/textspan_sweep.parquet",
        png=report(
            f"{DECOMPOSITION_OUT}/figures/textspan_sweep.png",
            caption="../report/decomposition_textspan_sweep.rst",
            category="Decomposition",
            subcategory="{model}",
        ),
        pdf=f"{DECOMPOSITION_OUT}/figures/textspan_sweep.pdf",
    params:
        textspan=DECOMPOSITION["textspan"],
        pools=TEXTSPAN_SWEEP_POOLS,
    log:
        rule_log("textspan_sweep", "{model}"),
    benchmark:
        rule_benchmark("textspan_sweep", "{model}")
    threads: config["threads"]
    resources:
        mem_mb=8000,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/decomposition_textspan_sweep.py"


rule decomposition_segmentation:
    input:
        mat=source_path("decomposition", "segmentation"),
        classifier=f"{DECOMPOSITION_OUT}/text/classifier_classification.npy",
        model=model_files,
    output:
        table=f"{DECOMPOSITION_OUT}/segmentation.parquet",
        png=report(
            f"{DECOMPOSITION_OUT}/figures/segmentation_examples.png",
            caption="../report/decomposition_segmentation_examples.rst",
            category="Decomposition",
            subcategory="{model}",
        ),
        pdf=f"{DECOMPOSITION_OUT}/figures/segmentation_examples.pdf",
    params:
        model=model_spec,
        segmentation=DECOMPOSITION["segmentation"],
        convention=DECOMPOSITION["convention"],
        device=DEVICE,
        batch_size=IMAGE_BATCH_SIZE,
        fingerprint=source_fingerprint("decomposition", "segmentation"),
    log:
        rule_log("decomposition_segmentation", "{model}"),
    benchmark:
        rule_benchmark("decomposition_segmentation", "{model}")
    threads: config["threads"]
    resources:
        **MODEL_RESOURCES,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/decomposition_segmentation.py"


rule waterbirds:
    input:
        unpack(paper_heads_input),
        store=f"{DECOMPOSITION_OUT}/store/waterbirds.h5",
        table="results/decomposition/datasets/waterbirds.parquet",
        classifier=f"{DECOMPOSITION_OUT}/text/classifier_waterbirds.npy",
        textspan=f"{DECOMPOSITION_OUT}/textspan.parquet",
        texts=f"{DECOMPOSITION_OUT}/text/descriptions.npy",
        places=f"{DECOMPOSITION_OUT}/text/place_descriptions.npy",
    output:
        table=f"{DECOMPOSITION_OUT}/waterbirds.parquet",
        heads=f"{DECOMPOSITION_OUT}/waterbirds_heads.parquet",
        png=report(
            f"{DECOMPOSITION_OUT}/figures/waterbirds_groups.png",
            caption="../report/decomposition_waterbirds_groups.rst",
            category="Decomposition",
            subcategory="{model}",
        ),
        pdf=f"{DECOMPOSITION_OUT}/figures/waterbirds_groups.pdf",
    params:
        heads=lambda wildcards: spurious_heads_setting(config, wildcards.model),
        heads_key=lambda wildcards: spurious_heads_key(config, wildcards.model),
        model=model_spec,
        n_heads=DECOMPOSITION["spurious"]["n_heads"],
        class_names=DECOMPOSITION["spurious"]["class_names"],
        ablation=DECOMPOSITION["spurious"]["ablation"],
        kept_layers=DECOMPOSITION["spurious"]["kept_layers"],
    log:
        rule_log("waterbirds", "{model}"),
    benchmark:
        rule_benchmark("waterbirds", "{model}")
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/decomposition_waterbirds.py"


rule head_neighbours:
    input:
        store=f"{DECOMPOSITION_OUT}/store/classification.h5",
        table=neighbour_image_list,
        textspan=f"{DECOMPOSITION_OUT}/textspan.parquet",
        model=model_files,
        queries=image_files(DECOMPOSITION["neighbours"]["image_queries"]),
    output:
        table=f"{DECOMPOSITION_OUT}/neighbours.parquet",
        png=report(
            f"{DECOMPOSITION_OUT}/figures/neighbour_grids.png",
            caption="../report/decomposition_neighbour_grids.rst",
            category="Decomposition",
            subcategory="{model}",
        ),
        pdf=f"{DECOMPOSITION_OUT}/figures/neighbour_grids.pdf",
    params:
        model=model_spec,
        neighbours=DECOMPOSITION["neighbours"],
        device=DEVICE,
        batch_size=TEXT_BATCH_SIZE,
    log:
        rule_log("head_neighbours", "{model}"),
    benchmark:
        rule_benchmark("head_neighbours", "{model}")
    threads: 1
    resources:
        **MODEL_RESOURCES,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/decomposition_neighbours.py"


rule spatial_maps:
    input:
        table=spatial_image_list,
        model=model_files,
        images=image_files(DECOMPOSITION["spatial_maps"]["images"]),
    output:
        table=f"{DECOMPOSITION_OUT}/spatial_maps.parquet",
        png=report(
            f"{DECOMPOSITION_OUT}/figures/spatial_maps.png",
            caption="../report/decomposition_spatial_maps.rst",
            category="Decomposition",
            subcategory="{model}",
        ),
        pdf=f"{DECOMPOSITION_OUT}/figures/spatial_maps.pdf",
    params:
        model=model_spec,
        spatial_maps=DECOMPOSITION["spatial_maps"],
        convention=DECOMPOSITION["convention"],
        device=DEVICE,
        batch_size=TEXT_BATCH_SIZE,
        image_batch_size=IMAGE_BATCH_SIZE,
    log:
        rule_log("spatial_maps", "{model}"),
    benchmark:
        rule_benchmark("spatial_maps", "{model}")
    threads: 1
    resources:
        **MODEL_RESOURCES,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/decomposition_spatial_maps.py"
