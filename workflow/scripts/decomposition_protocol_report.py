"""Rule script: the protocol report, each experiment under the configured protocol beside each alternative."""

import pandas as pd

from clip_interp.decomposition.figures import protocol_report_figure
from clip_interp.decomposition.protocol import largest_differences, protocol_report
from clip_interp.io import write_parquet
from clip_interp.workflow import run_rule


def main(smk, log):
    paper, variants = {}, {}
    for key, path in smk.input.items():
        experiment, _, variant = key.partition("__")
        table = pd.read_parquet(path)
        if variant:
            variants.setdefault(experiment, {})[variant] = table
        else:
            paper[experiment] = table
    report = protocol_report(paper, variants)
    log.info("largest differences:\n%s", largest_differences(report).to_string())
    write_parquet(report, smk.output.table, metadata={"model": smk.wildcards.model,
                                                      "convention": smk.params.convention, "dtype": smk.params.dtype})
    protocol_report_figure(report, [smk.output.png, smk.output.pdf],
                           f"{smk.wildcards.model}: the paper's protocol ({smk.params.convention}, "
                           f"{smk.params.dtype}) against each alternative")


run_rule(snakemake, main)  # noqa: F821
