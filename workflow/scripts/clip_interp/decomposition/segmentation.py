"""Zero-shot segmentation from per-source attention terms, its baselines and its metrics.

Map of an image for class c (the predicted class): over the patches j (class token excluded),
``m_j = sum_{l,h} term_{l,h}(cls -> j) . (t_c - mean_{c'} t_{c'})``, the per-source attention terms
(:func:`~clip_interp.decomposition.components.decompose`, ``sources="map"``) projected on the class
direction. Every method gives patch scores (B, P) that go through the same steps: reshaped to the
patch grid, upsampled bilinearly to the image, normalised to [0, 1] per image (min to 0, max to
1; a constant map becomes 0) and thresholded at its mean (foreground: above the mean).

Baselines on the same images: the class token's attention to the patches in the last layer, mean
over heads; attention rollout (Abnar & Zuidema, 2020): ``R = prod_l norm(0.5 mean_h A_l + 0.5 I)``
(rows renormalised, layer 1 applied first), the class row over the patches.

Metrics over a dataset: pixel accuracy (correct pixels / pixels); mIoU, the mean over {background,
foreground} of ``sum_images |pred_k & gt_k| / sum_images |pred_k | gt_k|``; mAP, the mean over images
of the average precision of the soft map against the foreground mask (``sklearn``'s
``average_precision_score``; an image whose mask is all background or all foreground has no AP and
is counted in ``n_images_without_ap``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..contributions import decompose, scores_to_maps  # noqa: F401
from ..errors import InputError
from ..images import centre_view

METHODS = ("decomposition", "last_layer_attention", "attention_rollout")


def class_directions(classifier: torch.Tensor) -> torch.Tensor:
    """``t_c - mean_c' t_c'`` for each class, (C, E)."""
    return classifier - classifier.mean(dim=0, keepdim=True)


@torch.no_grad()
def decomposition_scores(tower, pixels: torch.Tensor, classifier: torch.Tensor, *,
                         convention: str = "per_component") -> tuple[torch.Tensor, torch.Tensor]:
    """Patch scores (B, P) for the predicted class and the predicted classes (B,).

    One forward: the per-source terms summed over layers and heads, projected on every class
    direction ((B, T, C)); the prediction is the class of largest cosine with the image embedding.
    """
    directions = class_directions(classifier.float()).to(pixels.device)
    parts = decompose(tower, pixels, convention=convention, sources="map", directions=directions.T)
    predicted = (F.normalize(parts.embedding, dim=-1) @ classifier.to(pixels.device).float().T).argmax(-1)
    rows = torch.arange(len(predicted), device=pixels.device)
    return parts.heads[rows, 1:, predicted], predicted


@torch.no_grad()
def last_layer_attention_scores(tower, pixels: torch.Tensor) -> torch.Tensor:
    """The class token's last-layer attention to each patch, mean over heads, (B, P)."""
    key = ("pattern", tower.n_layers)
    pattern = tower.run(pixels, cache=[key], pooled_query_only=True).cache[key]
    return pattern[:, :, 0, 1:].mean(dim=1)


@torch.no_grad()
def attention_rollout_scores(tower, pixels: torch.Tensor) -> torch.Tensor:
    """Attention rollout's class row over the patches, (B, P), accumulated layer by layer in hooks."""
    state: dict[str, torch.Tensor] = {}

    def on_pattern(value, key):
        attention = value.float().mean(dim=1)
        eye = torch.eye(attention.shape[-1], device=attention.device)
        step = 0.5 * attention + 0.5 * eye
        step = step / step.sum(dim=-1, keepdim=True)
        state["rollout"] = step if "rollout" not in state else step @ state["rollout"]

    tower.run(pixels, hooks={("pattern", layer): on_pattern for layer in range(1, tower.n_layers + 1)})
    return state["rollout"][:, 0, 1:]


def binarise(maps: torch.Tensor) -> torch.Tensor:
    """Foreground where the soft map is above its own mean, (B, H, W) booleans."""
    return maps > maps.mean(dim=(1, 2), keepdim=True)


def preprocess_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A ground-truth mask (H, W) through CLIP's image geometry: shorter side resized to ``size``
    (nearest neighbour; the longer side truncated as torchvision's ``Resize`` does), then a centre
    crop of ``size`` x ``size`` (offsets rounded as ``CenterCrop``'s); booleans."""
    from PIL import Image

    image = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255)
    return np.asarray(centre_view(image, size, Image.NEAREST)) > 127


def display_image(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB image (H, W, 3) uint8 through the same geometry as :func:`preprocess_mask` (bicubic), as floats
    in [0, 1]: what the maps and masks of an example figure lie on."""
    from PIL import Image

    return np.asarray(centre_view(Image.fromarray(image), size, Image.BICUBIC)) / 255.0


@dataclass
class SegmentationMetrics:
    """Accumulates pixel accuracy, mIoU (sums over images) and per-image average precision."""

    correct: int = 0
    pixels: int = 0
    intersection: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))
    union: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))
    average_precisions: list = field(default_factory=list)
    without_ap: int = 0
    n_images: int = 0

    def update(self, soft_maps: torch.Tensor, masks) -> None:
        """Add images: soft maps (B, H, W) in [0, 1] and ground-truth masks (B, H, W) of the same size."""
        from sklearn.metrics import average_precision_score

        soft = torch.as_tensor(soft_maps).float().cpu()
        truth = torch.as_tensor(np.asarray(masks)).bool().cpu()
        if soft.shape != truth.shape:
            raise InputError(f"segmentation maps {tuple(soft.shape)} and masks {tuple(truth.shape)} differ in shape")
        predicted = binarise(soft)
        self.correct += int((predicted == truth).sum())
        self.pixels += truth.numel()
        for k, (p, g) in enumerate(((~predicted, ~truth), (predicted, truth))):
            self.intersection[k] += int((p & g).sum())
            self.union[k] += int((p | g).sum())
        for map_, gt in zip(soft, truth):
            self.n_images += 1
            positives = int(gt.sum())
            if positives == 0 or positives == gt.numel():
                self.without_ap += 1
                continue
            self.average_precisions.append(float(average_precision_score(gt.numpy().ravel(), map_.numpy().ravel())))

    def result(self) -> dict[str, float]:
        iou = np.where(self.union > 0, self.intersection / np.maximum(self.union, 1), np.nan)
        return {"pixel_accuracy": self.correct / self.pixels if self.pixels else float("nan"),
                "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
                "map": float(np.mean(self.average_precisions)) if self.average_precisions else float("nan"),
                "n_images": self.n_images, "n_images_without_ap": self.without_ap}


def method_scores(method: str, tower, pixels: torch.Tensor, classifier: torch.Tensor | None = None, *,
                  convention: str = "per_component") -> torch.Tensor:
    """Patch scores (B, P) of one method of :data:`METHODS`."""
    if method == "decomposition":
        if classifier is None:
            raise InputError("decomposition segmentation needs a zero-shot classifier")
        return decomposition_scores(tower, pixels, classifier, convention=convention)[0]
    if method == "last_layer_attention":
        return last_layer_attention_scores(tower, pixels)
    if method == "attention_rollout":
        return attention_rollout_scores(tower, pixels)
    raise InputError(f"unknown segmentation method {method!r}; choose from {METHODS}")


def evaluate_segmentation(model, items, classifier: torch.Tensor | None, *, methods=METHODS, batch_size: int = 8,
                          convention: str = "per_component"):
    """Metrics of each method over ``items``, an iterable of (image (H, W, 3) uint8, mask (H, W) bool).

    Each image goes through the model's preprocessing and its mask through :func:`preprocess_mask`;
    every method's patch scores go through the same maps, threshold and metrics. Returns a table
    ``method, pixel_accuracy, miou, map, n_images, n_images_without_ap``.
    """
    import pandas as pd
    from PIL import Image

    size = model.image_size
    metrics = {method: SegmentationMetrics() for method in methods}

    def flush(images, masks):
        pixels = torch.stack([model.preprocess(Image.fromarray(image)) for image in images]).to(model.device)
        truth = np.stack([preprocess_mask(mask, size) for mask in masks])
        for method in methods:
            scores = method_scores(method, model.vision, pixels, classifier, convention=convention)
            metrics[method].update(scores_to_maps(scores, model.vision.grid_size, (size, size)).cpu(), truth)

    images, masks = [], []
    for image, mask in items:
        images.append(image), masks.append(mask)
        if len(images) == batch_size:
            flush(images, masks)
            images, masks = [], []
    if images:
        flush(images, masks)
    return pd.DataFrame([{"method": method, **metrics[method].result()} for method in methods])
