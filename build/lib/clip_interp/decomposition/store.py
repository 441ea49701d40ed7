"""The decomposition store: moved to the core (:mod:`clip_interp.contribution_store`), which the heads study
shares; re-exported here."""

from ..contribution_store import (DTYPES, DecompositionStore, gather_shards, n_shards, shard_rows,  # noqa: F401
                                  write_decomposition)
