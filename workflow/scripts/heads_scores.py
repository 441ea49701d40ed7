"""Rule script: entanglement readings (as labelled and mapped onto the taxonomy), association (by the matcher or
from a filled judging sheet) and agreement with the published labels, per labeller."""

import pandas as pd

from clip_interp.heads.steps import score_table
from clip_interp.io import write_parquet
from clip_interp.models import load_model
from clip_interp.workflow import run_rule


def main(smk, log):
    labels = {name: pd.read_parquet(smk.input[f"labels_{name}"]) for name in smk.params.labellers}
    model = load_model(smk.params.model, smk.params.device)
    table = score_table(labels, model, smk.params.model, taxonomy_path=smk.input.taxonomy,
                        published_path=smk.input.get("published"), association=smk.params.association,
                        batch_size=smk.params.batch_size, llm_vocabulary=smk.params.llm_vocabulary,
                        llm_mapping=pd.read_parquet(smk.input.mapping) if "mapping" in smk.input.keys() else None,
                        judgements=smk.input.get("judgements"), model_id=smk.wildcards.model)
    for row in table.itertuples():
        log.info("%s: entanglement %.3f (%s labels), mapped by %s %.3f, association %.3f (%s), agreement %s "
                 "(%d published heads matched)", row.labeller, row.entanglement, row.label_vocabulary, row.mapped_by,
                 row.mapped_entanglement, row.association, row.association_method,
                 f"{row.agreement:.3f}" if row.n_agreement_heads else "n/a", row.n_agreement_heads)
    write_parquet(table, smk.output[0], metadata={"model": smk.wildcards.model, "association": smk.params.association})


run_rule(snakemake, main)  # noqa: F821
