"""Rule script: zero-shot segmentation metrics of each method on ImageNet-segmentation under the configured
protocol and each single-option alternative, and example maps under the configured protocol."""

import itertools

from clip_interp.decomposition.data import ImageNetSegmentation
from clip_interp.decomposition.figures import segmentation_examples
from clip_interp.decomposition.segmentation import SegmentationProtocol, evaluate_segmentation, example_panels
from clip_interp.decomposition.steps import load_tensor
from clip_interp.io import write_parquet
from clip_interp.models import load_model
from clip_interp.workflow import run_rule


def main(smk, log):
    p = smk.params.segmentation
    protocol = SegmentationProtocol(mask_geometry=p["mask_geometry"], clip_negative=p["clip_negative"])
    model = load_model(smk.params.model, smk.params.device)
    classifier = load_tensor(smk.input.classifier)
    dataset = ImageNetSegmentation(smk.input.mat)
    n = len(dataset) if p["max_images"] is None else min(len(dataset), p["max_images"])
    alternatives = [a.name for a in protocol.with_single_alternatives()[1:]]
    log.info("%d of %d images, methods %s; protocol %s; also computed: %s", n, len(dataset), p["methods"],
             protocol.description, ", ".join(alternatives))
    table = evaluate_segmentation(model, itertools.islice(iter(dataset), n), classifier, methods=p["methods"],
                                  batch_size=smk.params.batch_size, convention=smk.params.convention,
                                  protocol=protocol)
    log.info("metrics (configured protocol first):\n%s", table.to_string())
    write_parquet(table, smk.output.table, metadata={
        "model": smk.wildcards.model, "n_images": n, "n_images_in_file": len(dataset), "protocol": protocol.name,
        "mask_geometry": protocol.mask_geometry, "clip_negative": protocol.clip_negative,
        "alternatives": alternatives})
    items = [dataset.item(i) for i in range(min(n, p["n_examples"]))]
    shown, masks, maps = example_panels(model, items, classifier, p["methods"], convention=smk.params.convention,
                                        protocol=protocol)
    segmentation_examples(shown, masks, maps, [smk.output.png, smk.output.pdf],
                          f"{smk.wildcards.model}: zero-shot segmentation (map of the predicted class)\n"
                          f"protocol {protocol.description}")
    dataset.close()


run_rule(snakemake, main)  # noqa: F821
