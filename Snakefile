# Mechanistic interpretability of CLIP-like models: the negation study and its data layer.
# Default: the full study on VALSE existence (config/config.yaml).
# Offline demo: snakemake --cores 2 --configfile config/demo.yaml

from snakemake.utils import min_version, validate

min_version("9.0")

if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/synthetic.smk"
include: "rules/cache.smk"
include: "rules/negation.smk"
include: "rules/preliminary.smk"
include: "rules/tracing.smk"
include: "rules/selectivity.smk"
include: "rules/ablation.smk"
include: "rules/cross_model.smk"


rule all:
    input:
        all_targets(),
    default_target: True
