# The protocol report: the decomposition's experiments under the paper's protocol (the configured one) beside
# each named alternative. Store variants re-run the store's experiments on a store written with one setting
# changed (results/decomposition/{model}/protocol/{variant}/); the other alternatives come from each step's rule.

VARIANT_OUT = "results/decomposition/{model}/protocol/{variant}"

STUDY_TARGETS["decomposition"] += expand(
    "results/decomposition/{model}/{name}",
    model=MODELS,
    name=["protocol_report.parquet", "figures/protocol_report.png", "figures/protocol_report.pdf"],
)


wildcard_constraints:
    variant="(convention|dtype)_[a-z0-9_]+",


use rule decompose_shard as decompose_variant_shard with:
    output:
        f"{VARIANT_OUT}/store/{{imageset}}/shard_{{shard}}.h5",
    params:
        model=model_spec,
        shard_size=DECOMPOSITION["shard_size"],
        convention=variant_setting("convention"),
        dtype=variant_setting("dtype"),
        units=STORE_UNITS,
        device=DEVICE,
        batch_size=IMAGE_BATCH_SIZE,
    log:
        rule_log("decompose_variant_shard", "{model}", "{variant}", "{imageset}", "{shard}"),
    benchmark:
        rule_benchmark("decompose_variant_shard", "{model}", "{variant}", "{imageset}", "{shard}")


use rule gather_decomposition as gather_variant_decomposition with:
    input:
        parts=variant_shard_parts,
        table="results/decomposition/datasets/{imageset}.parquet",
    output:
        f"{VARIANT_OUT}/store/{{imageset}}.h5",
    log:
        rule_log("gather_variant_decomposition", "{model}", "{variant}", "{imageset}"),
    benchmark:
        rule_benchmark("gather_variant_decomposition", "{model}", "{variant}", "{imageset}")


use rule zero_shot_ablation as zero_shot_ablation_variant with:
    input:
        store=f"{VARIANT_OUT}/store/classification.h5",
        classifier=f"{DECOMPOSITION_OUT}/text/classifier_classification.npy",
    output:
        table=f"{VARIANT_OUT}/zero_shot_ablation.parquet",
        png=f"{VARIANT_OUT}/figures/accuracy_vs_ablated_layers.png",
        pdf=f"{VARIANT_OUT}/figures/accuracy_vs_ablated_layers.pdf",
    log:
        rule_log("zero_shot_ablation_variant", "{model}", "{variant}"),
    benchmark:
        rule_benchmark("zero_shot_ablation_variant", "{model}", "{variant}")


use rule textspan as textspan_variant with:
    input:
        store=f"{VARIANT_OUT}/store/classification.h5",
        classifier=f"{DECOMPOSITION_OUT}/text/classifier_classification.npy",
        texts=f"{DECOMPOSITION_OUT}/text/descriptions.npy",
        pool=source_path("decomposition", "descriptions"),
    output:
        table=f"{VARIANT_OUT}/textspan.parquet",
        reconstruction=f"{VARIANT_OUT}/textspan_reconstruction.parquet",
        png=f"{VARIANT_OUT}/figures/head_cards.png",
        pdf=f"{VARIANT_OUT}/figures/head_cards.pdf",
    log:
        rule_log("textspan_variant", "{model}", "{variant}"),
    benchmark:
        rule_benchmark("textspan_variant", "{model}", "{variant}")


use rule decomposition_segmentation as decomposition_segmentation_variant with:
    output:
        table=f"{VARIANT_OUT}/segmentation.parquet",
        png=f"{VARIANT_OUT}/figures/segmentation_examples.png",
        pdf=f"{VARIANT_OUT}/figures/segmentation_examples.pdf",
    params:
        model=model_spec,
        segmentation=DECOMPOSITION["segmentation"],
        convention=variant_setting("convention"),
        device=DEVICE,
        batch_size=IMAGE_BATCH_SIZE,
        fingerprint=source_fingerprint("decomposition", "segmentation"),
    log:
        rule_log("decomposition_segmentation_variant", "{model}", "{variant}"),
    benchmark:
        rule_benchmark("decomposition_segmentation_variant", "{model}", "{variant}")


use rule waterbirds as waterbirds_variant with:
    input:
        unpack(paper_heads_input),
        store=f"{VARIANT_OUT}/store/waterbirds.h5",
        table="results/decomposition/datasets/waterbirds.parquet",
        classifier=f"{DECOMPOSITION_OUT}/text/classifier_waterbirds.npy",
        textspan=f"{VARIANT_OUT}/textspan.parquet",
        texts=f"{DECOMPOSITION_OUT}/text/descriptions.npy",
        places=f"{DECOMPOSITION_OUT}/text/place_descriptions.npy",
    output:
        table=f"{VARIANT_OUT}/waterbirds.parquet",
        heads=f"{VARIANT_OUT}/waterbirds_heads.parquet",
        png=f"{VARIANT_OUT}/figures/waterbirds_groups.png",
        pdf=f"{VARIANT_OUT}/figures/waterbirds_groups.pdf",
    log:
        rule_log("waterbirds_variant", "{model}", "{variant}"),
    benchmark:
        rule_benchmark("waterbirds_variant", "{model}", "{variant}")


rule protocol_report:
    input:
        unpack(protocol_report_inputs),
    output:
        table=f"{DECOMPOSITION_OUT}/protocol_report.parquet",
        png=report(
            f"{DECOMPOSITION_OUT}/figures/protocol_report.png",
            caption="../report/decomposition_protocol_report.rst",
            category="Decomposition",
            subcategory="{model}",
        ),
        pdf=f"{DECOMPOSITION_OUT}/figures/protocol_report.pdf",
    params:
        convention=DECOMPOSITION["convention"],
        dtype=DECOMPOSITION["dtype"],
    log:
        rule_log("protocol_report", "{model}"),
    benchmark:
        rule_benchmark("protocol_report", "{model}")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/decomposition_protocol_report.py"
