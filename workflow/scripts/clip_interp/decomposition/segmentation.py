"""Zero-shot segmentation from per-source attention terms, its baselines, and its metrics as the paper's
code computes them on ImageNet-segmentation (Gandelsman et al., ICLR 2024, ``compute_segmentations.py``).

Map of an image (:func:`decomposition_scores`): the predicted class c is the argmax over the classes of the
image embedding's dot product with the classifier's columns; over the patches j (sources 1..T-1, the class
token left out), ``s_j = sum_{l,h} term_{l,h}(cls -> j) . (t_c - mean_{c'} t_{c'})``, the per-source attention
terms of every layer and head (:func:`~clip_interp.decomposition.components.decompose`, ``sources="map"``)
projected on column c minus the mean of that projection over all classes.

Baselines on the same images: the class token's attention to the patches in the last layer, mean over heads;
attention rollout (Abnar & Zuidema, 2020): ``R = prod_l norm(0.5 mean_h A_l + 0.5 I)`` (rows renormalised,
layer 1 applied first), the class row over the patches.

Every method's patch scores go through the same steps (:func:`segmentation_maps`): the patch grid upsampled
bilinearly to the input size (the grid times the patch size), negative values clipped to 0 (option
``clip_negative``), min-max normalised per image to [0, 1], and a pixel is foreground where its value is above
the map's mean (:func:`binarise`). A constant map has no min-max (the paper's code gets 0/0 = NaN there): it is
background everywhere and its AP scores every pixel 0 on both channels (the paper's NaN -> 0).

The image goes through the model's preprocessing (shorter side resized to the input size, centre crop). The
ground-truth mask (option ``mask_geometry``, :func:`input_mask`): ``resize`` (the paper's) resizes it directly
to the input size x input size, nearest neighbour, whatever the image's aspect; ``aligned`` puts it through the
image's own resize and centre crop, so that it lies on the pixels the model sees.

Metrics over a dataset (:class:`SegmentationMetrics`), no image skipped:

- pixel accuracy: ``sum_images correct pixels / sum_images pixels``;
- IoU of background (k = 0) and foreground (k = 1): ``sum_images |pred_k & gt_k| / sum_images |pred_k | gt_k|``
  (0 where the union is empty), mIoU their mean;
- AP of an image (:func:`two_channel_average_precision`): the one-hot target of background and foreground
  (2 x H x W labels), background scored by ``1 - map`` and foreground by ``map``, all 2 H W pixels in one
  average precision (``sklearn``'s definition ``sum_n (R_n - R_{n-1}) P_n`` over the distinct scores; NaN -> 0).
  An all-foreground or all-background mask has an AP like any other. mAP is the mean over all images.

The paper's protocol is :class:`SegmentationProtocol`'s default (``mask_geometry="resize"``,
``clip_negative=True``); :func:`evaluate_segmentation` also computes each single-option alternative from the
same forward, one table row per (protocol, method).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..contributions import decompose, scores_to_maps
from ..errors import InputError
from ..images import centre_view

METHODS = ("decomposition", "last_layer_attention", "attention_rollout")
MASK_GEOMETRIES = ("resize", "aligned")


@dataclass(frozen=True)
class SegmentationProtocol:
    """How patch scores and masks become metrics: ``mask_geometry`` (``resize``: the mask resized directly to the
    input square, the paper's; ``aligned``: through the image's resize and centre crop) and ``clip_negative``
    (True: negative map values set to 0 before the min-max, the paper's; False: no clipping)."""

    mask_geometry: str = "resize"
    clip_negative: bool = True

    def __post_init__(self):
        if self.mask_geometry not in MASK_GEOMETRIES:
            raise InputError(f"`decomposition.segmentation.mask_geometry` is {self.mask_geometry!r}; allowed: "
                             f"{' or '.join(repr(g) for g in MASK_GEOMETRIES)}")
        if not isinstance(self.clip_negative, bool):
            raise InputError(f"`decomposition.segmentation.clip_negative` is {self.clip_negative!r}; "
                             "allowed: true or false")

    @property
    def name(self) -> str:
        """``paper``, ``aligned_masks``, ``unclipped`` or ``aligned_masks_unclipped``."""
        parts = []
        if self.mask_geometry == "aligned":
            parts.append("aligned_masks")
        if not self.clip_negative:
            parts.append("unclipped")
        return "_".join(parts) or "paper"

    @property
    def description(self) -> str:
        """The protocol in words, e.g. for a figure's title."""
        mask = ("mask resized to the input square" if self.mask_geometry == "resize"
                else "mask resized and centre-cropped as the image")
        return f"{self.name}: {mask}, {'negative values clipped' if self.clip_negative else 'unclipped'}"

    def with_single_alternatives(self) -> list[SegmentationProtocol]:
        """This protocol, then each protocol that differs from it in one option."""
        other_geometry = next(g for g in MASK_GEOMETRIES if g != self.mask_geometry)
        return [self, replace(self, mask_geometry=other_geometry), replace(self, clip_negative=not self.clip_negative)]


def class_directions(classifier: torch.Tensor) -> torch.Tensor:
    """``t_c - mean_c' t_c'`` for each class, (C, E)."""
    return classifier - classifier.mean(dim=0, keepdim=True)


@torch.no_grad()
def decomposition_scores(tower, pixels: torch.Tensor, classifier: torch.Tensor, *,
                         convention: str = "per_component") -> tuple[torch.Tensor, torch.Tensor]:
    """Patch scores (B, P) for the predicted class and the predicted classes (B,).

    One forward: the per-source terms summed over layers and heads, projected on every class
    direction ((B, T, C)); the prediction is the argmax of the image embedding's dot product with the
    classifier (the same argmax as the cosine's: the embedding's norm is one positive factor per image).
    """
    directions = class_directions(classifier.float()).to(pixels.device)
    parts = decompose(tower, pixels, convention=convention, sources="map", directions=directions.T)
    predicted = (parts.embedding.float() @ classifier.to(pixels.device).float().T).argmax(-1)
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


def segmentation_maps(scores: torch.Tensor, grid: tuple[int, int], size: int, *, clip_negative: bool = True):
    """Soft maps (B, size, size) in [0, 1] of patch scores (B, P): bilinear upsampling of the patch grid to the
    input size, negative values set to 0 when ``clip_negative`` (a protocol's option), per-image min-max
    (:func:`~clip_interp.contributions.scores_to_maps`)."""
    return scores_to_maps(scores, grid, (size, size), clip_negative=clip_negative)


def binarise(maps: torch.Tensor) -> torch.Tensor:
    """Foreground where the soft map is above its own mean, (B, H, W) booleans."""
    return maps > maps.mean(dim=(1, 2), keepdim=True)


def resized_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A ground-truth mask (H, W) resized directly to ``size`` x ``size`` (PIL nearest neighbour, as
    torchvision's ``Resize((size, size), NEAREST)``), whatever its aspect: the paper's; booleans."""
    from PIL import Image

    image = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255)
    return np.asarray(image.resize((size, size), Image.NEAREST)) > 127


def aligned_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A ground-truth mask (H, W) through CLIP's image geometry: shorter side resized to ``size``
    (nearest neighbour; the longer side truncated as torchvision's ``Resize`` does), then a centre
    crop of ``size`` x ``size`` (offsets rounded as ``CenterCrop``'s); booleans."""
    from PIL import Image

    image = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255)
    return np.asarray(centre_view(image, size, Image.NEAREST)) > 127


def input_mask(mask: np.ndarray, size: int, geometry: str) -> np.ndarray:
    """The mask on the model's input square: :func:`resized_mask` (``resize``) or :func:`aligned_mask`
    (``aligned``)."""
    if geometry == "resize":
        return resized_mask(mask, size)
    if geometry == "aligned":
        return aligned_mask(mask, size)
    raise InputError(f"unknown mask geometry {geometry!r}; choose from {MASK_GEOMETRIES}")


def display_image(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB image (H, W, 3) uint8 as the model sees it (shorter side resized, centre crop; bicubic), as floats
    in [0, 1]: what the maps of an example figure lie on."""
    from PIL import Image

    return np.asarray(centre_view(Image.fromarray(image), size, Image.BICUBIC)) / 255.0


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision of ``scores`` (N,) against the boolean ``labels`` (N,): ``sum_n (R_n - R_{n-1}) P_n``
    over the distinct scores in decreasing order (tied scores form one step), as
    ``sklearn.metrics.average_precision_score`` computes it; NaN without positives."""
    order = np.argsort(-scores, kind="quicksort")  # within a run of ties the order does not matter
    ordered = scores[order]
    true_positives = np.cumsum(labels[order])
    run_ends = np.r_[np.flatnonzero(ordered[1:] != ordered[:-1]), len(ordered) - 1]
    found = true_positives[run_ends].astype(np.float64)
    if found[-1] == 0:
        return float("nan")
    return float(np.sum(np.diff(found, prepend=0.0) * found / (run_ends + 1)) / found[-1])


def two_channel_average_precision(soft_maps: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    """Each image's AP over both channels, (B,) float64: labels ``[~mask, mask]``, scores ``[1 - map, map]``
    (a constant map scores 0 on both; NaN scores -> 0), all 2 H W pixels in one :func:`average_precision`;
    NaN -> 0."""
    flat = soft_maps.flatten(1).float()
    truth = masks.flatten(1).bool()
    constant = (flat.amax(1) == flat.amin(1))[:, None]
    foreground = torch.where(constant, torch.zeros_like(flat), torch.nan_to_num(flat, nan=0.0))
    background = torch.where(constant, torch.zeros_like(flat), torch.nan_to_num(1 - flat, nan=0.0))
    scores = torch.cat([background, foreground], 1).cpu().numpy()
    labels = torch.cat([~truth, truth], 1).cpu().numpy()
    return np.nan_to_num(np.array([average_precision(s, y) for s, y in zip(scores, labels)], dtype=np.float64))


@dataclass
class SegmentationMetrics:
    """Accumulates pixel accuracy and the two IoUs (sums over images) and each image's two-channel AP."""

    correct: int = 0
    pixels: int = 0
    intersection: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))
    union: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))
    average_precisions: list = field(default_factory=list)

    def update(self, soft_maps: torch.Tensor, masks) -> None:
        """Add images: soft maps (B, H, W) in [0, 1] and ground-truth masks (B, H, W) of the same size, on any
        device."""
        soft = torch.as_tensor(soft_maps).float()
        truth = (masks if torch.is_tensor(masks) else torch.as_tensor(np.asarray(masks))).bool().to(soft.device)
        if soft.shape != truth.shape:
            raise InputError(f"segmentation maps {tuple(soft.shape)} and masks {tuple(truth.shape)} differ in shape")
        predicted = binarise(soft)
        self.correct += int((predicted == truth).sum())
        self.pixels += truth.numel()
        for k, (p, g) in enumerate(((~predicted, ~truth), (predicted, truth))):
            self.intersection[k] += int((p & g).sum())
            self.union[k] += int((p | g).sum())
        self.average_precisions.extend(two_channel_average_precision(soft, truth).tolist())

    def result(self) -> dict[str, float]:
        """``pixel_accuracy``, ``iou_background``, ``iou_foreground``, ``miou``, ``map`` and ``n_images``."""
        iou = np.where(self.union > 0, self.intersection / np.maximum(self.union, 1), 0.0)
        n_images = len(self.average_precisions)
        return {"pixel_accuracy": self.correct / self.pixels if self.pixels else float("nan"),
                "iou_background": float(iou[0]), "iou_foreground": float(iou[1]), "miou": float(iou.mean()),
                "map": float(np.mean(self.average_precisions)) if n_images else float("nan"), "n_images": n_images}


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


def model_pixels(model, images) -> torch.Tensor:
    """RGB images (H, W, 3) uint8 through the model's preprocessing, stacked on its device."""
    from PIL import Image

    return torch.stack([model.preprocess(Image.fromarray(image)) for image in images]).to(model.device)


def evaluate_segmentation(model, items, classifier: torch.Tensor | None, *, methods=METHODS, batch_size: int = 8,
                          convention: str = "per_component", protocol: SegmentationProtocol | None = None):
    """Metrics of each method over ``items``, an iterable of (image (H, W, 3) uint8, mask (H, W) bool), under
    ``protocol`` (default the paper's) and under each protocol that differs from it in one option.

    One forward per batch and method; the maps of each clipping and the masks of each geometry are made once
    and shared. Returns a table ``protocol, mask_geometry, clip_negative, configured, method, pixel_accuracy,
    iou_background, iou_foreground, miou, map, n_images``: the rows of ``protocol`` first (``configured`` true),
    then the alternatives', each in the order of ``methods``.
    """
    import pandas as pd

    protocols = (protocol or SegmentationProtocol()).with_single_alternatives()
    size, grid = model.image_size, model.vision.grid_size
    metrics = {(p, method): SegmentationMetrics() for p in protocols for method in methods}

    def flush(images, masks):
        pixels = model_pixels(model, images)
        truth = {g: torch.as_tensor(np.stack([input_mask(mask, size, g) for mask in masks])).to(model.device)
                 for g in {p.mask_geometry for p in protocols}}
        for method in methods:
            scores = method_scores(method, model.vision, pixels, classifier, convention=convention)
            maps = {clip: segmentation_maps(scores, grid, size, clip_negative=clip)
                    for clip in {p.clip_negative for p in protocols}}
            for p in protocols:
                metrics[p, method].update(maps[p.clip_negative], truth[p.mask_geometry])

    images, masks = [], []
    for image, mask in items:
        images.append(image), masks.append(mask)
        if len(images) == batch_size:
            flush(images, masks)
            images, masks = [], []
    if images:
        flush(images, masks)
    return pd.DataFrame([{"protocol": p.name, "mask_geometry": p.mask_geometry, "clip_negative": p.clip_negative,
                          "configured": p == protocols[0], "method": method, **metrics[p, method].result()}
                         for p in protocols for method in methods])


def configured_rows(table):
    """The rows of an :func:`evaluate_segmentation` table under its configured protocol (a table without the
    ``configured`` column, written before the alternatives were added, is returned as it is)."""
    return table[table["configured"]] if "configured" in table else table


def example_panels(model, items, classifier, methods, *, convention: str = "per_component",
                   protocol: SegmentationProtocol | None = None):
    """What the examples figure draws, as evaluated under ``protocol``: the images as the model sees them
    (H, W, 3) in [0, 1], their masks on the input square (:func:`input_mask`), and each method's soft maps."""
    protocol = protocol or SegmentationProtocol()
    size = model.image_size
    pixels = model_pixels(model, [image for image, _ in items])
    shown = [display_image(image, size) for image, _ in items]
    masks = [input_mask(mask, size, protocol.mask_geometry).astype(float) for _, mask in items]
    maps = {m: list(segmentation_maps(method_scores(m, model.vision, pixels, classifier, convention=convention),
                                      model.vision.grid_size, size, clip_negative=protocol.clip_negative).cpu().numpy())
            for m in methods}
    return shown, masks, maps
