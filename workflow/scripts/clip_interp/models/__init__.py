"""Hookable CLIP models: one interface over open_clip and Hugging Face ``transformers``."""

from .hooked import ActivationCache, HookedCLIP, HookedTower, TowerOutput, patch_positions
from .loading import load_model, load_tokenizer

__all__ = ["ActivationCache", "HookedCLIP", "HookedTower", "TowerOutput", "load_model", "load_tokenizer", "patch_positions"]
