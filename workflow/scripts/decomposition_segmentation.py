"""Rule script: zero-shot segmentation metrics of each method on ImageNet-segmentation, and example maps."""

import itertools

import torch
from PIL import Image

from clip_interp.decomposition.data import ImageNetSegmentation
from clip_interp.decomposition.figures import segmentation_examples
from clip_interp.decomposition.segmentation import (
    display_image,
    evaluate_segmentation,
    method_scores,
    preprocess_mask,
    scores_to_maps,
)
from clip_interp.decomposition.steps import load_tensor
from clip_interp.io import write_parquet
from clip_interp.models import load_model
from clip_interp.workflow import run_rule


def example_maps(model, items, classifier, methods, convention):
    """Preprocessed images (H, W, 3) in [0, 1], their masks, and each method's soft maps."""
    size = model.image_size
    pixels = torch.stack([model.preprocess(Image.fromarray(image)) for image, _ in items]).to(model.device)
    shown = [display_image(image, size) for image, _ in items]
    masks = [preprocess_mask(mask, size).astype(float) for _, mask in items]
    maps = {m: list(scores_to_maps(method_scores(m, model.vision, pixels, classifier, convention=convention),
                                   model.vision.grid_size, (size, size)).cpu().numpy()) for m in methods}
    return shown, masks, maps


def main(smk, log):
    p = smk.params.segmentation
    model = load_model(smk.params.model, smk.params.device)
    classifier = load_tensor(smk.input.classifier)
    dataset = ImageNetSegmentation(smk.input.mat)
    n = len(dataset) if p["max_images"] is None else min(len(dataset), p["max_images"])
    log.info("%d of %d images, methods %s", n, len(dataset), p["methods"])
    table = evaluate_segmentation(model, itertools.islice(iter(dataset), n), classifier, methods=p["methods"],
                                  batch_size=smk.params.batch_size, convention=smk.params.convention)
    log.info("metrics:\n%s", table.to_string())
    write_parquet(table, smk.output.table, metadata={"model": smk.wildcards.model, "n_images": n,
                                                     "n_images_in_file": len(dataset)})
    items = [dataset.item(i) for i in range(min(n, p["n_examples"]))]
    shown, masks, maps = example_maps(model, items, classifier, p["methods"], smk.params.convention)
    segmentation_examples(shown, masks, maps, [smk.output.png, smk.output.pdf],
                          f"{smk.wildcards.model}: zero-shot segmentation (map of the predicted class)")
    dataset.close()


run_rule(snakemake, main)  # noqa: F821
