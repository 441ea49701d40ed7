"""Zero-shot classification from class names and prompt templates, and mean-ablation of components.

Zero-shot classifier: per class, the mean of the unit text embeddings of the class name in each
template, renormalised to unit length; an image is assigned the class of largest cosine.

Mean-ablation: a set S of components is replaced by its mean over the image set inside the sum,
``e_S = sum_{c not in S} c + sum_{c in S} mean(c)``, and the image re-classified. It is computed as
``e + sum_{c in S} (mean(c) - c)`` when S is the smaller part and as the kept sum otherwise, so that
ablating nothing gives exactly ``e`` and ablating everything exactly ``sum_c mean(c)``, the mean
embedding. The class-token-to-class-token term of a layer (a part of its heads' terms) is ablated the same way,
``+ mean(a_l) - a_l``, in layers none of whose heads is ablated as a whole.

The paper's mean-ablation table (its code works on terms divided by ``||e||``, as the store holds them): the
baseline; the "MLP group" (the embedding term, i.e. ``ln_pre``'s class token, and every MLP: L+1 terms); the
class-token-to-class-token attention term of every layer; both together; and the curve of the first k attention
layers (:func:`paper_ablations`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..encoding import encode_texts
from ..errors import InputError
from ..models import layer_index
from .table import TERMS, component_means

Template = Callable[[str], str] | str


def imagenet_zero_shot_metadata() -> tuple[list[str], list[Callable[[str], str]]]:
    """ImageNet's 1,000 class names and OpenAI's 80 prompt templates, as open_clip ships them."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    return list(IMAGENET_CLASSNAMES), list(OPENAI_IMAGENET_TEMPLATES)


OPENAI_IMAGENET_TEMPLATES = "openai_imagenet"


def prompt_templates(setting: str | Sequence[str]) -> list[Template]:
    """The templates a config setting names: ``openai_imagenet`` is OpenAI's 80 ImageNet templates as open_clip
    ships them (the decomposition paper's Waterbirds classifier); a list of ``{}`` strings is itself."""
    if isinstance(setting, str):
        if setting != OPENAI_IMAGENET_TEMPLATES:
            raise InputError(f"prompt templates {setting!r}: give {OPENAI_IMAGENET_TEMPLATES!r} or a list of "
                             "templates with '{}' for the class name")
        return imagenet_zero_shot_metadata()[1]
    return list(setting)


def fill_template(template: Template, name: str) -> str:
    """A prompt: ``template(name)`` for a callable, ``template.format(name)`` for a string with ``{}``."""
    if callable(template):
        return template(name)
    if "{}" not in template:
        raise InputError(f"prompt template {template!r} has no '{{}}' placeholder for the class name")
    return template.format(name)


@torch.no_grad()
def zero_shot_classifier(model, class_names: Sequence[str], templates: Sequence[Template], *,
                         batch_size: int = 256) -> torch.Tensor:
    """(C, E) unit class embeddings: per class the renormalised mean of its templates' unit text embeddings."""
    if not class_names or not templates:
        raise InputError("a zero-shot classifier needs at least one class name and one template")
    prompts = [fill_template(t, name) for name in class_names for t in templates]
    text = F.normalize(encode_texts(model, prompts, batch_size=batch_size).float(), dim=-1)
    per_class = text.view(len(class_names), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1)


def predict(embeddings: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """The class of largest cosine for each row of ``embeddings`` (B, E)."""
    return (F.normalize(embeddings.float(), dim=-1) @ classifier.to(embeddings.device).T).argmax(dim=-1)


@dataclass
class Ablation:
    """A set of components to mean-ablate: boolean masks over each term (True: replaced by its mean).

    ``heads`` (L, H), ``attn_bias`` (L,), ``mlps`` (L,), ``embedding_term`` and ``ln_bias`` (scalars);
    ``class_attention`` (L,): the layers whose class-token-to-class-token term is ablated (None: no layer).
    """

    name: str
    heads: torch.Tensor
    attn_bias: torch.Tensor
    mlps: torch.Tensor
    embedding_term: bool = False
    ln_bias: bool = False
    class_attention: torch.Tensor | None = None

    def __post_init__(self):
        if self.class_attention is None:
            self.class_attention = torch.zeros(len(self.mlps), dtype=torch.bool)
        overlap = self.class_attention & self.heads.any(dim=1)
        if overlap.any():
            layers = [int(i) + 1 for i in torch.nonzero(overlap).flatten()]
            raise InputError(f"ablation {self.name!r} ablates heads of layers {layers} and their class-token-to-"
                             "class-token term, which is part of those heads; ablate one or the other")

    @classmethod
    def none(cls, n_layers: int, n_heads: int, name: str = "none") -> "Ablation":
        return cls(name, torch.zeros(n_layers, n_heads, dtype=torch.bool), torch.zeros(n_layers, dtype=torch.bool),
                   torch.zeros(n_layers, dtype=torch.bool))

    @classmethod
    def everything(cls, n_layers: int, n_heads: int, name: str = "everything") -> "Ablation":
        return cls(name, torch.ones(n_layers, n_heads, dtype=torch.bool), torch.ones(n_layers, dtype=torch.bool),
                   torch.ones(n_layers, dtype=torch.bool), True, True)

    @classmethod
    def layers(cls, n_layers: int, n_heads: int, *, attention: Iterable[int] = (), mlp: Iterable[int] = (),
               name: str | None = None) -> "Ablation":
        """Whole attention layers (all heads and the bias) and MLP layers, numbered 1..L."""
        ablation = cls.none(n_layers, n_heads, name or "layers")
        for layer in attention:
            _check_layer(layer, n_layers)
            ablation.heads[layer_index(layer)] = True
            ablation.attn_bias[layer_index(layer)] = True
        for layer in mlp:
            _check_layer(layer, n_layers)
            ablation.mlps[layer_index(layer)] = True
        return ablation

    @classmethod
    def of_heads(cls, n_layers: int, n_heads: int, heads: Iterable[tuple[int, int]], name: str = "heads") -> "Ablation":
        """Individual heads ``(layer 1..L, head 0..H-1)``."""
        ablation = cls.none(n_layers, n_heads, name)
        for layer, head in heads:
            _check_layer(layer, n_layers)
            if not 0 <= head < n_heads:
                raise InputError(f"head {head} of layer {layer} does not exist; heads are numbered 0..{n_heads - 1}")
            ablation.heads[layer_index(layer), head] = True
        return ablation

    @classmethod
    def mlp_group(cls, n_layers: int, n_heads: int, name: str = "mlp_group") -> "Ablation":
        """The paper's MLP group: the embedding term (``ln_pre``'s class token) and every MLP, L+1 terms."""
        ablation = cls.layers(n_layers, n_heads, mlp=range(1, n_layers + 1), name=name)
        ablation.embedding_term = True
        return ablation

    @classmethod
    def class_attention_terms(cls, n_layers: int, n_heads: int, layers: Iterable[int] | None = None,
                              name: str = "class_attention") -> "Ablation":
        """The class-token-to-class-token attention term of ``layers`` (1..L; default: every layer)."""
        ablation = cls.none(n_layers, n_heads, name)
        for layer in range(1, n_layers + 1) if layers is None else layers:
            _check_layer(layer, n_layers)
            ablation.class_attention[layer_index(layer)] = True
        return ablation

    def union(self, other: "Ablation", name: str) -> "Ablation":
        """Every component ablated by ``self`` or by ``other``."""
        return Ablation(name, self.heads | other.heads, self.attn_bias | other.attn_bias, self.mlps | other.mlps,
                        bool(self.embedding_term or other.embedding_term), bool(self.ln_bias or other.ln_bias),
                        self.class_attention | other.class_attention)

    def masks(self) -> dict[str, torch.Tensor]:
        return {"embedding_term": torch.tensor(bool(self.embedding_term)), "heads": self.heads,
                "attn_bias": self.attn_bias, "mlps": self.mlps, "ln_bias": torch.tensor(bool(self.ln_bias))}

    def count(self) -> tuple[int, int]:
        """(ablated, total) component counts; an ablated class-token-to-class-token term counts as ablated (it is
        not a further component of the total)."""
        masks = self.masks()
        ablated = int(sum(m.sum() for m in masks.values())) + int(self.class_attention.sum())
        return ablated, int(sum(m.numel() for m in masks.values()))


def _check_layer(layer: int, n_layers: int) -> None:
    if not 1 <= layer <= n_layers:
        raise InputError(f"layer {layer} does not exist; layers are numbered 1..{n_layers}")


def _masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over the component axes of ``values`` (B, *mask.shape, E) where ``mask`` is True, (B, E)."""
    if mask.ndim == 0:
        return values if bool(mask) else torch.zeros_like(values)
    weights = mask.to(values.dtype).to(values.device)
    return torch.einsum("b...e,...->be", values, weights)


def ablated_embeddings(terms: dict[str, torch.Tensor], means: dict[str, torch.Tensor],
                       ablation: Ablation) -> torch.Tensor:
    """``e_S`` (B, E) for a batch of terms: the components of ``ablation`` replaced by their means."""
    masks = ablation.masks()
    ablated = int(sum(m.sum() for m in masks.values()))
    total = int(sum(m.numel() for m in masks.values()))
    if ablated <= total - ablated:
        out = terms["embedding"].clone()
        for name in TERMS:
            delta = means[name].unsqueeze(0) - terms[name]
            out += _masked_sum(delta, masks[name])
    else:
        out = torch.zeros_like(terms["embedding"])
        for name in TERMS:
            out += (_masked_sum(terms[name], ~masks[name])
                    + _masked_sum(means[name].unsqueeze(0).expand_as(terms[name][:1]), masks[name]))
    if ablation.class_attention.any():
        if "class_attention" not in terms:
            raise InputError(f"ablation {ablation.name!r} needs the class-token-to-class-token terms, which this "
                             "component source lacks (decomposition stores hold them since the paper's units)")
        delta = means["class_attention"].unsqueeze(0) - terms["class_attention"]
        out += _masked_sum(delta, ablation.class_attention)
    return out


def ablation_accuracies(source, classifier: torch.Tensor, labels: Sequence[int], ablations: Sequence[Ablation], *,
                        means: dict[str, torch.Tensor] | None = None, batch_size: int = 256) -> pd.DataFrame:
    """Zero-shot accuracy under each ablation, one row each: ``ablation, ablated, components, accuracy, n_images``."""
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(labels_t) != source.n:
        raise InputError(f"{len(labels_t)} labels for {source.n} images in the component store")
    means = component_means(source, batch_size) if means is None else means
    correct = torch.zeros(len(ablations), dtype=torch.long)
    for rows, terms in source.batches(batch_size):
        for i, ablation in enumerate(ablations):
            pred = predict(ablated_embeddings(terms, means, ablation), classifier)
            correct[i] += int((pred.cpu() == labels_t[rows]).sum())
    rows = []
    for i, ablation in enumerate(ablations):
        ablated, total = ablation.count()
        rows.append({"ablation": ablation.name, "ablated": ablated, "components": total,
                     "accuracy": correct[i].item() / max(source.n, 1), "n_images": source.n})
    return pd.DataFrame(rows)


def paper_ablations(n_layers: int, n_heads: int) -> list[Ablation]:
    """The rows of the paper's mean-ablation table: ``mlp_group``, ``class_attention`` (every layer) and
    ``mlp_group_and_class_attention``."""
    mlp_group = Ablation.mlp_group(n_layers, n_heads)
    class_attention = Ablation.class_attention_terms(n_layers, n_heads)
    return [mlp_group, class_attention, mlp_group.union(class_attention, "mlp_group_and_class_attention")]


def layer_ablation_curve(n_layers: int, n_heads: int) -> list[Ablation]:
    """Ablations of the first k attention layers, k = 0..L (the accuracy-vs-ablated-layers figure)."""
    return [Ablation.layers(n_layers, n_heads, attention=range(1, k + 1), name=f"attention_layers_1_{k}")
            for k in range(n_layers + 1)]
