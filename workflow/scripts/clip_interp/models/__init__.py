"""Hookable CLIP models: one interface over open_clip and Hugging Face ``transformers``."""

from .hooked import (
    BLOCK_SITES,
    FINAL_SITES,
    SITES,
    ActivationCache,
    FinalNorm,
    HookedCLIP,
    HookedTower,
    TowerOutput,
    layer_index,
    patch_positions,
    site_layers,
)
from .hooks import SITE_AXES, mean_ablation_hook, replace_hook, zero_ablation_hook
from .loading import load_model, load_tokenizer

__all__ = [
    "ActivationCache", "BLOCK_SITES", "FINAL_SITES", "FinalNorm", "HookedCLIP", "HookedTower", "SITES", "SITE_AXES",
    "TowerOutput", "layer_index", "load_model", "load_tokenizer", "mean_ablation_hook", "patch_positions",
    "replace_hook", "site_layers", "zero_ablation_hook",
]
