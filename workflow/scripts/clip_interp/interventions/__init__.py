"""The intervention engine: batched patch-and-resume and block-output replacement on :class:`HookedTower` s.

It knows sites, layers and positions, never a study's vocabulary. :mod:`.patching` patches
the residual stream at (layer, position) and resumes; :mod:`.ablation` replaces block
outputs and resumes from cached residual streams; :mod:`.reference` does the same through
the library's own modules, one full forward per intervention, to check the batched code.
Hooks for ablating a site inside a forward are in :mod:`clip_interp.models.hooks`.
"""

from .ablation import REPLACEABLE_SITES, replace_block_outputs
from .patching import PatchedEmbeddings, iter_resid_patches, resid_patch_sweep

__all__ = ["PatchedEmbeddings", "REPLACEABLE_SITES", "iter_resid_patches", "replace_block_outputs", "resid_patch_sweep"]
