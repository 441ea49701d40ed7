"""The decomposition of a vision tower's image embedding: moved to the core (:mod:`clip_interp.contributions`),
which the heads study shares; re-exported here."""

from ..contributions import (CONVENTIONS, SOURCE_MODES, Decomposition, _assemble, _Collector,  # noqa: F401
                             check_vision_tower, decompose)
