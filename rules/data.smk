# Data: fetch VALSE existence, its Visual7W images and CANNOT; prepare the instances.

# Where the Visual7W images are downloaded to from an http(s) URL; a local zip or folder is read in place.
VISUAL7W_DOWNLOAD = "results/raw/downloads/visual7w_images.zip"


# A local source's content is a `params:` entry (`fingerprint`), so changing the file in place (or an
# image in a local folder) re-runs its fetch and everything downstream of it.
# The fetches need the internet, which compute nodes often lack: on a cluster they run where Snakemake runs.
localrules:
    fetch_valse,
    download_visual7w_images,
    extract_valse_images,
    fetch_cannot,


STUDY_TARGETS["negation"] += expand("results/datasets/valse_existence_{variant}.parquet", variant=VARIANTS)
STUDY_TARGETS["negation"] += expand(
    "results/datasets/{model}/valse_existence_{variant}_positions.parquet", model=MODELS, variant=VARIANTS
)
STUDY_TARGETS["negation"] += expand("results/datasets/{model}/cannot_pairs.parquet", model=MODELS)


use rule fetch_source as fetch_valse with:
    output:
        "results/raw/valse/existence.json",
    params:
        source=NEGATION["sources"]["valse_existence"],
        name="negation.sources.valse_existence",
        kind="json",
        json_shape="object",
        fingerprint=source_fingerprint("negation", "valse_existence"),
    log:
        rule_log("fetch_valse"),
    benchmark:
        rule_benchmark("fetch_valse")


use rule fetch_source as download_visual7w_images with:
    output:
        VISUAL7W_DOWNLOAD,
    params:
        source=NEGATION["sources"]["visual7w_images"],
        name="negation.sources.visual7w_images",
        kind="zip",
        fingerprint=source_fingerprint("negation", "visual7w_images"),
    log:
        rule_log("download_visual7w_images"),
    benchmark:
        rule_benchmark("download_visual7w_images")


rule extract_valse_images:
    input:
        valse="results/raw/valse/existence.json",
        archive=source_path("negation", "visual7w_images", download=VISUAL7W_DOWNLOAD),
    output:
        directory("results/raw/images"),
    params:
        fingerprint=source_fingerprint("negation", "visual7w_images"),
    log:
        rule_log("extract_valse_images"),
    benchmark:
        rule_benchmark("extract_valse_images")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow/scripts/extract_images.py"


use rule fetch_source as fetch_cannot with:
    output:
        "results/raw/cannot/cannot_dataset_v1.1.tsv",
    params:
        source=NEGATION["sources"]["cannot"],
        name="negation.sources.cannot",
        kind="tsv",
        fingerprint=source_fingerprint("negation", "cannot"),
    log:
        rule_log("fetch_cannot"),
    benchmark:
        rule_benchmark("fetch_cannot")


rule prepare_valse:
    input:
        valse=valse_json(),
        images=images_dir(),
    output:
        table="results/datasets/valse_existence_{variant}.parquet",
        report="results/datasets/valse_existence_{variant}.report.json",
    params:
        min_caption_votes=NEGATION["dataset"]["min_caption_votes"],
    group:
        PREPARATION_GROUP
    log:
        rule_log("prepare_valse", "{variant}"),
    benchmark:
        rule_benchmark("prepare_valse", "{variant}")
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow/scripts/prepare_valse.py"


rule token_positions:
    input:
        table="results/datasets/valse_existence_{variant}.parquet",
        model=model_files,
    output:
        table="results/datasets/{model}/valse_existence_{variant}_positions.parquet",
        report="results/datasets/{model}/valse_existence_{variant}_positions.report.json",
    params:
        model=model_spec,
        spacy_model=NEGATION["spacy_model"],
    group:
        PREPARATION_GROUP
    log:
        rule_log("token_positions", "{model}", "{variant}"),
    benchmark:
        rule_benchmark("token_positions", "{model}", "{variant}")
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/token_positions.py"


rule cannot_pairs:
    input:
        tsv="results/raw/cannot/cannot_dataset_v1.1.tsv",
        model=model_files,
    output:
        table="results/datasets/{model}/cannot_pairs.parquet",
        report="results/datasets/{model}/cannot_pairs.report.json",
    params:
        model=model_spec,
        spacy_model=NEGATION["spacy_model"],
        reading=NEGATION["selectivity"]["cannot_reading"],
        source_url=NEGATION["sources"]["cannot"]["url"],
    group:
        PREPARATION_GROUP
    log:
        rule_log("cannot_pairs", "{model}"),
    benchmark:
        rule_benchmark("cannot_pairs", "{model}")
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/cannot_pairs.py"
