"""Atomic output writing: tables (Parquet), caches (HDF5), JSON (figures: :func:`clip_interp.plotting.save_figure`).

Every writer goes through :func:`atomic_path`: the content is written to a temporary
file beside the target and renamed over it only once complete, so an interrupted job
never leaves a truncated file that looks finished.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"clip_interp"


def _umask() -> int:
    """The process's file-creation mask (``mkstemp`` creates files readable by the owner only)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched. Temporary
    files of ``path`` left by a killed earlier write (which could not clean up) are removed first.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else target.suffix + ".part"
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*{glob.escape(suffix)}"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# --- instances excluded upstream -------------------------------------------------------------------
# A table that leaves instances out records why under the metadata key "excluded": one record per
# (table, reason) with the count and the keys. Every table written downstream of it carries the
# same records: a rule script run by :func:`clip_interp.workflow.run_rule` inherits those of its
# input tables (:func:`inherit_exclusions`), and :func:`write_parquet` adds them to every table it writes.
EXCLUDED = "excluded"
_inherited: list[dict[str, Any]] = []


def exclusion_record(table: str | os.PathLike, reason: str, description: str, keys) -> dict[str, Any]:
    """The metadata record of the instances ``keys`` that ``table`` leaves out for ``reason``."""
    keys = sorted(str(k) for k in keys)
    return {"table": str(table), "reason": reason, "description": description, "count": len(keys), "keys": keys}


def _merged(records) -> list[dict[str, Any]]:
    """``records`` without repeats of the same (table, reason), in a fixed order."""
    unique = {(r["table"], r["reason"]): r for r in records}
    return [unique[k] for k in sorted(unique)]


def exclusions_of(paths) -> list[dict[str, Any]]:
    """The exclusion records in the metadata of the Parquet tables among ``paths``."""
    records = []
    for path in paths:
        if str(path).endswith(".parquet") and Path(path).is_file():
            records.extend(read_parquet_metadata(path).get(EXCLUDED, []))
    return _merged(records)


def inherit_exclusions(paths) -> list[dict[str, Any]]:
    """Make the exclusion records of the input tables ``paths`` part of every table this process writes."""
    _inherited[:] = exclusions_of(paths)
    return list(_inherited)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None,
                  excluded=()) -> None:
    """Write ``df`` as Parquet with ``metadata`` (the producing parameters) as file metadata.

    The metadata also gets, under ``"excluded"``, the records ``excluded`` (:func:`exclusion_record`)
    of what this table leaves out and those inherited from the input tables (:func:`inherit_exclusions`).
    """
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    metadata = dict(metadata or {})
    records = _merged([*_inherited, *excluded])
    if records:
        metadata[EXCLUDED] = records
    meta[METADATA_KEY] = json.dumps(_jsonable(metadata), sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Return the producing parameters stored by :func:`write_parquet`."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")
