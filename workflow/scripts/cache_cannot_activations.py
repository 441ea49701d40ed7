"""Rule script: cache the text tower's attention patterns and embeddings for the CANNOT pairs."""

import pandas as pd

from clip_interp.models import load_model
from clip_interp.negation.caches import write_text_cache
from clip_interp.workflow import run_rule


def main(smk, log):
    pairs = pd.read_parquet(smk.input.table)
    model = load_model(smk.params.model, smk.params.device)
    log.info("%d CANNOT pairs, device %s", len(pairs), model.device)
    write_text_cache(model, pairs["source_index"].astype(str).tolist(),
                     {"negated": [model.tokenizer.encode(t) for t in pairs["negated"]],
                      "non_negated": [model.tokenizer.encode(t) for t in pairs["non_negated"]]},
                     smk.output[0], model_id=smk.wildcards.model, batch_size=smk.params.batch_size,
                     dtype=smk.params.dtype, metadata={"dataset": "cannot"}, sites=("pattern",))


run_rule(snakemake, main)  # noqa: F821
