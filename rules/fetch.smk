# The one pattern of the fetch rules. Each is `use rule fetch_source as fetch_<x> with:`, giving its output, its
# source's config entry (`source`), that entry's key path for messages (`name`), the `kind` of file checked, its log
# and benchmark; this rule itself has no output, so no target asks for it. The fetches need the internet, which
# compute nodes often lack: each study's rule file lists its fetch rules as `localrules`, run where Snakemake runs.


rule fetch_source:
    params:
        json_shape=None,
    log:
        rule_log("fetch_source"),
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow/scripts/fetch_source.py"
