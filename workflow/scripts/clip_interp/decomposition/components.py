"""The decomposition of a vision tower's image embedding: moved to the core (:mod:`clip_interp.contributions`),
which the heads study shares; its public names re-exported here."""

from ..contributions import CONVENTIONS, SOURCE_MODES, Decomposition, check_vision_tower, decompose

__all__ = ["CONVENTIONS", "SOURCE_MODES", "Decomposition", "check_vision_tower", "decompose"]
