# The head-properties study (Madasu et al., CLIP-InterpreT): property labels per head of the last layers,
# interpretability scores, the explorer's index and five analyses per model, then the cross-model table.

STUDY_TARGETS["heads"] += expand(
    "results/heads/{model}/{name}",
    model=MODELS,
    name=[f"labels_{labeller}.parquet" for labeller in HEADS["labellers"]]
    + ["scores.parquet", "explorer.json", "association_sheet.tsv"]
    + (["llm_label_mapping.parquet"] if heads_open_llm() else [])
    + [f"analyses/{analysis}.parquet" for analysis in HEADS_ANALYSES]
    + [f"figures/{analysis}.{ext}" for analysis in HEADS_ANALYSES for ext in ("png", "pdf")],
) + [
    "results/heads/cross_model_scores.parquet",
    "results/heads/property_layers.parquet",
] + [f"results/heads/figures/{figure}.{ext}" for figure in HEADS_CROSS_FIGURES for ext in ("png", "pdf")]


wildcard_constraints:
    labeller="taxonomy|llm|published",


# The fetches need the internet, which compute nodes often lack: they run where Snakemake runs.
localrules:
    fetch_heads_source,


use rule fetch_source as fetch_heads_source with:
    output:
        "results/raw/heads/{name}",
    wildcard_constraints:
        name="published_labels|property_groups",
    params:
        source=lambda wildcards: HEADS_SOURCES[wildcards.name],
        name=lambda wildcards: f"heads.sources.{wildcards.name}",
        kind="tsv",
    log:
        rule_log("fetch_heads_source", "{name}"),
    benchmark:
        rule_benchmark("fetch_heads_source", "{name}")


rule heads_labels:
    input:
        unpack(heads_labeller_inputs),
    output:
        f"{HEADS_OUT}/labels_{{labeller}}.parquet",
    params:
        model=model_spec,
        n_layers=HEADS["n_layers"],
        n_texts=HEADS["n_texts"],
        cache=f"results/heads/llm_cache/{{model}}.json",
        vocabulary=lambda wildcards: HEADS["llm"]["vocabulary"] if wildcards.labeller == "llm" else None,
        published_fingerprint=lambda wildcards: (
            heads_published_fingerprint(wildcards) if wildcards.labeller == "published" else None
        ),
        device=DEVICE,
        batch_size=TEXT_BATCH_SIZE,
    log:
        rule_log("heads_labels", "{model}", "{labeller}"),
    benchmark:
        rule_benchmark("heads_labels", "{model}", "{labeller}")
    threads: config["threads"]
    resources:
        **MODEL_RESOURCES,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/heads_labels.py"


# The open-vocabulary LLM labels mapped onto the taxonomy by the model's text tower (the scores' mapped readings).
rule heads_llm_label_mapping:
    input:
        labels=f"{HEADS_OUT}/labels_llm.parquet",
        taxonomy=HEADS["taxonomy"],
        model=model_files,
    output:
        f"{HEADS_OUT}/llm_label_mapping.parquet",
    params:
        model=model_spec,
        device=DEVICE,
        batch_size=TEXT_BATCH_SIZE,
    log:
        rule_log("heads_llm_label_mapping", "{model}"),
    benchmark:
        rule_benchmark("heads_llm_label_mapping", "{model}")
    threads: config["threads"]
    resources:
        **MODEL_RESOURCES,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/heads_llm_label_mapping.py"


# The sheet on which a person judges each head's top texts against its label (`heads.association.judgements`).
rule heads_association_sheet:
    input:
        unpack(heads_label_tables),
    output:
        f"{HEADS_OUT}/association_sheet.tsv",
    params:
        labellers=HEADS["labellers"],
        n_texts=HEADS["association"]["n_texts"],
    log:
        rule_log("heads_association_sheet", "{model}"),
    benchmark:
        rule_benchmark("heads_association_sheet", "{model}")
    threads: 1
    resources:
        mem_mb=1000,
    group:
        LIGHT_GROUP
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/heads_association_sheet.py"


rule heads_scores:
    input:
        unpack(heads_label_tables),
        unpack(heads_published_input),
        unpack(heads_llm_mapping_input),
        unpack(heads_judgements_input),
        textspan=HEADS_DECOMPOSITION["textspan"],
        taxonomy=HEADS["taxonomy"],
        model=model_files,
    output:
        f"{HEADS_OUT}/scores.parquet",
    params:
        model=model_spec,
        labellers=HEADS["labellers"],
        association=HEADS["association"],
        llm_vocabulary=HEADS["llm"]["vocabulary"] if "llm" in HEADS["labellers"] else None,
        published_fingerprint=heads_published_fingerprint,
        device=DEVICE,
        batch_size=TEXT_BATCH_SIZE,
    log:
        rule_log("heads_scores", "{model}"),
    benchmark:
        rule_benchmark("heads_scores", "{model}")
    threads: config["threads"]
    resources:
        **MODEL_RESOURCES,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/heads_scores.py"


rule heads_app_groups:
    input:
        property_heads=source_path("heads", "property_groups"),
    output:
        f"{HEADS_OUT}/property_groups_app.parquet",
    params:
        model=model_spec,
        fingerprint=source_fingerprint("heads", "property_groups"),
    log:
        rule_log("heads_app_groups", "{model}"),
    benchmark:
        rule_benchmark("heads_app_groups", "{model}")
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/heads_app_groups.py"


# The explorer's index: every image's head contributions of the analysed layers, head-major, as a float16 copy
# (scanned by the searches), a float32 copy (the candidates re-scored exactly) and float32 norms, plus each labelled
# property's summed heads (float16, and their norms), memory-mapped by the explorer (clip_interp.heads.vectors);
# explorer_index.json describes them (shapes, dtypes, sampled digests, the head groups).
rule heads_explorer_index:
    input:
        unpack(heads_label_tables),
        unpack(heads_app_groups_input),
        store=HEADS_DECOMPOSITION["store"],
    output:
        search=f"{HEADS_OUT}/explorer_index.f16.npy",
        exact=f"{HEADS_OUT}/explorer_index.f32.npy",
        norms=f"{HEADS_OUT}/explorer_norms.f32.npy",
        group_search=f"{HEADS_OUT}/explorer_groups.f16.npy",
        group_norms=f"{HEADS_OUT}/explorer_group_norms.f32.npy",
        description=f"{HEADS_OUT}/explorer_index.json",
    params:
        labellers=HEADS["labellers"],
    log:
        rule_log("heads_explorer_index", "{model}"),
    benchmark:
        rule_benchmark("heads_explorer_index", "{model}")
    threads: 1
    resources:
        mem_mb=heads_index_writer_mem_mb,
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/heads_explorer_index.py"


rule heads_explorer_manifest:
    input:
        unpack(heads_label_tables),
        unpack(heads_app_groups_input),
        **HEADS_DECOMPOSITION,
        scores=f"{HEADS_OUT}/scores.parquet",
        index=f"{HEADS_OUT}/explorer_index.json",
    output:
        f"{HEADS_OUT}/explorer.json",
    params:
        model=model_spec,
        labellers=HEADS["labellers"],
        image_set=HEADS["image_set"],
    log:
        rule_log("heads_explorer_manifest", "{model}"),
    benchmark:
        rule_benchmark("heads_explorer_manifest", "{model}")
    threads: 1
    resources:
        mem_mb=1000,
    group:
        LIGHT_GROUP
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/heads_manifest.py"


# The explorer's five analyses over the image set, one rule each (heads_property_neighbours, ...).
for heads_analysis in HEADS_ANALYSES:

    rule:
        name:
            f"heads_{heads_analysis}"
        input:
            unpack(heads_index_inputs),
            images=heads_query_image_list,
        output:
            table=f"{HEADS_OUT}/analyses/{heads_analysis}.parquet",
            png=report(
                f"{HEADS_OUT}/figures/{heads_analysis}.png",
                caption=f"../report/heads_{heads_analysis}.rst",
                category="Head properties",
                subcategory="{model}",
            ),
            pdf=f"{HEADS_OUT}/figures/{heads_analysis}.pdf",
        params:
            analysis=heads_analysis,
            analyses=HEADS["analyses"],
            n_texts=HEADS["n_texts"],
            # a few query images: the CPU (no GPU requested) holds the index and runs them
            device="cpu",
        log:
            rule_log(f"heads_{heads_analysis}", "{model}"),
        benchmark:
            rule_benchmark(f"heads_{heads_analysis}", "{model}")
        threads: config["threads"]
        resources:
            mem_mb=heads_index_mem_mb,
        conda:
            "../envs/model.yaml"
        script:
            "../workflow/scripts/heads_analysis.py"


rule heads_cross_model:
    input:
        scores=expand("results/heads/{model}/scores.parquet", model=MODELS),
        labels=expand("results/heads/{model}/labels_taxonomy.parquet", model=MODELS),
    output:
        table="results/heads/cross_model_scores.parquet",
        layers="results/heads/property_layers.parquet",
        scores_png=report(
            "results/heads/figures/scores_per_model.png",
            caption="../report/heads_scores_per_model.rst",
            category="Head properties",
            subcategory="cross-model",
        ),
        scores_pdf="results/heads/figures/scores_per_model.pdf",
        distribution_png=report(
            "results/heads/figures/property_distribution.png",
            caption="../report/heads_property_distribution.rst",
            category="Head properties",
            subcategory="cross-model",
        ),
        distribution_pdf="results/heads/figures/property_distribution.pdf",
        layers_png=report(
            "results/heads/figures/property_layers.png",
            caption="../report/heads_property_layers.rst",
            category="Head properties",
            subcategory="cross-model",
        ),
        layers_pdf="results/heads/figures/property_layers.pdf",
    params:
        models=MODELS,
    log:
        rule_log("heads_cross_model"),
    benchmark:
        rule_benchmark("heads_cross_model")
    threads: 1
    resources:
        mem_mb=2000,
    group:
        LIGHT_GROUP
    conda:
        "../envs/model.yaml"
    script:
        "../workflow/scripts/heads_cross_model.py"
