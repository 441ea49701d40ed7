import pandas as pd
import pytest

from clip_interp.io import atomic_path, read_parquet_metadata, write_parquet


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "table.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporary_of_a_killed_write_is_removed(tmp_path):
    target = tmp_path / "table.parquet"
    stale = tmp_path / ".table.parquet.abc123.parquet.part"
    stale.write_text("left by a killed job")
    other = tmp_path / ".other.parquet.abc123.parquet.part"
    other.write_text("another target's temporary")
    write_parquet(pd.DataFrame({"a": [1, 2]}), target, {"n": 2})
    assert not stale.exists()
    assert other.exists(), "only temporaries of the same target are removed"
    assert read_parquet_metadata(target) == {"n": 2}
    assert pd.read_parquet(target)["a"].tolist() == [1, 2]


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    target = tmp_path / "table.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
