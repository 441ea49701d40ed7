"""The intervention engine: batched patch-and-resume and block-output replacement on :class:`HookedTower` s.

It knows sites, layers and positions, never a study's vocabulary. :mod:`.patching` patches
the residual stream at (layer, position), or at a set of positions at once, and resumes;
:mod:`.site_patching` turns a patch of one block's attention or MLP output at a position
into such a residual patch; :mod:`.ablation` replaces block outputs (of one block, or of a window
of consecutive blocks) and resumes from cached residual streams; :mod:`.reference` does the same
through the library's own modules, one full forward per intervention, to check the batched code.
Hooks for ablating a site inside a forward are in :mod:`clip_interp.models.hooks`.
"""

from .ablation import REPLACEABLE_SITES, replace_block_output_windows, replace_block_outputs
from .patching import (
    PatchedEmbeddings,
    PatchedSetEmbeddings,
    iter_resid_patches,
    iter_resid_set_patches,
    resid_patch_sweep,
)
from .site_patching import PATCHABLE_BLOCK_SITES, block_output_patch_values

__all__ = [
    "PATCHABLE_BLOCK_SITES", "PatchedEmbeddings", "PatchedSetEmbeddings", "REPLACEABLE_SITES",
    "block_output_patch_values", "iter_resid_patches", "iter_resid_set_patches", "replace_block_output_windows",
    "replace_block_outputs", "resid_patch_sweep",
]
