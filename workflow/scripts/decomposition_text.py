"""Rule script: the text side of the decomposition study: both zero-shot classifiers and the embedded pools
(descriptions, words and place descriptions; an unconfigured pool is written as an empty (0, E) array)."""

import torch

from clip_interp.decomposition.classifier import prompt_templates, zero_shot_classifier
from clip_interp.decomposition.data import read_description_pool
from clip_interp.decomposition.steps import class_names_and_templates, encode_pool, save_tensor
from clip_interp.models import load_model
from clip_interp.workflow import run_rule


def main(smk, log):
    model = load_model(smk.params.model, smk.params.device)
    batch = smk.params.batch_size
    names, templates = class_names_and_templates(smk.input.get("class_names"), smk.input.get("templates"))
    log.info("classification: %d classes x %d templates", len(names), len(templates))
    save_tensor(zero_shot_classifier(model, names, templates, batch_size=batch), smk.output.classification)
    waterbirds_templates = prompt_templates(smk.params.waterbirds_templates)
    log.info("waterbirds: classes %s x %d templates", list(smk.params.waterbirds_classes), len(waterbirds_templates))
    save_tensor(zero_shot_classifier(model, smk.params.waterbirds_classes, waterbirds_templates, batch_size=batch),
                smk.output.waterbirds)
    for name in ("descriptions", "words", "place_descriptions"):
        if smk.input.get(name):
            pool = read_description_pool(smk.input.get(name))
            log.info("%s: %d texts (%d blank lines skipped, %d duplicates kept)", name, len(pool.texts),
                     pool.blank_lines, pool.duplicates)
            save_tensor(encode_pool(model, pool.texts, batch), smk.output[name])
        else:
            log.info("%s: not configured; an empty (0, E) array", name)
            save_tensor(torch.zeros(0, model.vision.proj.shape[-1]), smk.output[name])


run_rule(snakemake, main)  # noqa: F821
