# Mechanistic interpretability of CLIP-like models: the negation study and its data layer.
# Default: the full study on VALSE existence (config/config.yaml).
# Offline demo: snakemake --cores 2 --configfile config/demo.yaml

import os

from snakemake.utils import min_version, validate

from clip_interp.config import ConfigError, check_config

min_version("9.0")

if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# One readable line per problem (and where the keys of the old layout moved), then the defaults.
try:
    check_config(config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))
except ConfigError as error:
    raise WorkflowError(str(error)) from None
validate(config, "workflow/schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/fetch.smk"
include: "rules/synthetic.smk"


# The negation study: its data, caches and analyses.
if "negation" in STUDIES:

    include: "rules/negation_common.smk"
    include: "rules/data.smk"
    include: "rules/cache.smk"
    include: "rules/negation.smk"
    include: "rules/preliminary.smk"
    include: "rules/tracing.smk"
    include: "rules/selectivity.smk"
    include: "rules/ablation.smk"
    include: "rules/cross_model.smk"
    include: "rules/reproduction.smk"
    include: "rules/followups.smk"


# The decomposition study: sharded decomposition, then its analyses.
if "decomposition" in STUDIES:

    include: "rules/decomposition_common.smk"
    include: "rules/decomposition.smk"
    include: "rules/decomposition_protocol.smk"


# The head-properties study: labels, scores, the explorer's index and analyses (needs the decomposition study).
if "heads" in STUDIES:

    include: "rules/heads_common.smk"
    include: "rules/heads.smk"
    include: "rules/heads_reproduction.smk"


rule all:
    input:
        all_targets(),
    default_target: True
