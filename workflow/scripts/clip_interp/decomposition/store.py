"""The decomposition store: moved to the core (:mod:`clip_interp.contribution_store`), which the heads study
shares; re-exported here."""

from ..contribution_store import (  # noqa: F401
    COMPLETION_ATTRIBUTE,
    DTYPES,
    DecompositionStore,
    gather_shards,
    n_shards,
    shard_problems,
    shard_rows,
    verify_shards,
    write_decomposition,
)
