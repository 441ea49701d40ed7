# Negator-selective attention heads of the text tower: VALSE existence (Figures 9, 10) and CANNOT (Figure 11).


STUDY_TARGETS["negation"] += expand(
    "results/negation/{model}/{table}.parquet",
    model=MODELS,
    table=[
        "selectivity",
        "selectivity_by_position",
        "selectivity_heads",
        "selectivity_heads_by_side",
        "selectivity_layers",
        "cannot_selectivity",
        "cannot_selectivity_heads",
    ],
)
STUDY_TARGETS["negation"] += expand(
    "results/negation/{model}/figures/{figure}.{ext}",
    model=MODELS,
    figure=[
        "fig9_negator_selectivity",
        "fig9_negator_selectivity_pooled",
        "fig10_selectivity_by_position",
        "fig10_selectivity_by_position_pooled",
        "fig11_cannot_selectivity",
    ],
    ext=["png", "pdf"],
)


rule negator_selectivity:
    input:
        text=f"results/cache/{{model}}/text_{analysis_variant('selectivity')}.h5",
        positions=f"results/datasets/{{model}}/valse_existence_{analysis_variant('selectivity')}_positions.parquet",
        scores="results/negation/{model}/scores.parquet",
    output:
        selectivity="results/negation/{model}/selectivity.parquet",
        by_position="results/negation/{model}/selectivity_by_position.parquet",
        heads="results/negation/{model}/selectivity_heads.parquet",
        layers="results/negation/{model}/selectivity_layers.parquet",
        heads_by_side="results/negation/{model}/selectivity_heads_by_side.parquet",
        fig9_png=report(
            "results/negation/{model}/figures/fig9_negator_selectivity.png",
            caption="../report/fig9.rst",
            category="Negator-selective heads",
        ),
        fig9_pdf="results/negation/{model}/figures/fig9_negator_selectivity.pdf",
        fig9_pooled_png=report(
            "results/negation/{model}/figures/fig9_negator_selectivity_pooled.png",
            caption="../report/fig9_pooled.rst",
            category="Negator-selective heads",
        ),
        fig9_pooled_pdf="results/negation/{model}/figures/fig9_negator_selectivity_pooled.pdf",
        fig10_png=report(
            "results/negation/{model}/figures/fig10_selectivity_by_position.png",
            caption="../report/fig10.rst",
            category="Negator-selective heads",
        ),
        fig10_pdf="results/negation/{model}/figures/fig10_selectivity_by_position.pdf",
        fig10_pooled_png=report(
            "results/negation/{model}/figures/fig10_selectivity_by_position_pooled.png",
            caption="../report/fig10_pooled.rst",
            category="Negator-selective heads",
        ),
        fig10_pooled_pdf="results/negation/{model}/figures/fig10_selectivity_by_position_pooled.pdf",
    params:
        threshold=NEGATION["selectivity"]["threshold"],
        layer=NEGATION["selectivity"]["layer"],
        variant=analysis_variant("selectivity"),
        batch_size=TEXT_BATCH_SIZE,
    group:
        LIGHT_GROUP
    log:
        rule_log("negator_selectivity", "{model}"),
    benchmark:
        rule_benchmark("negator_selectivity", "{model}")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/negator_selectivity.py"


rule cannot_selectivity:
    input:
        cache="results/cache/{model}/text_cannot.h5",
        pairs="results/datasets/{model}/cannot_pairs.parquet",
        valse_heads="results/negation/{model}/selectivity_heads.parquet",
    output:
        table="results/negation/{model}/cannot_selectivity.parquet",
        heads="results/negation/{model}/cannot_selectivity_heads.parquet",
        fig11_png=report(
            "results/negation/{model}/figures/fig11_cannot_selectivity.png",
            caption="../report/fig11.rst",
            category="Negator-selective heads",
        ),
        fig11_pdf="results/negation/{model}/figures/fig11_cannot_selectivity.pdf",
    params:
        threshold=NEGATION["selectivity"]["threshold"],
        batch_size=TEXT_BATCH_SIZE,
    group:
        LIGHT_GROUP
    log:
        rule_log("cannot_selectivity", "{model}"),
    benchmark:
        rule_benchmark("cannot_selectivity", "{model}")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/cannot_selectivity.py"
