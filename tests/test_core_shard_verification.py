"""The gather's verification of decomposition shards: a shard finished by a job that Snakemake lost track of
(its incomplete marker left behind) passes; one cut short, or holding other rows than the image list's, is named."""

import json

import h5py
import numpy as np
import pytest
from PIL import Image

from clip_interp.contribution_store import (
    COMPLETION_ATTRIBUTE,
    STORE_FIELDS,
    UNITS,
    completion_record,
    gather_shards,
    keys_digest,
    shard_problems,
    verify_shards,
    write_decomposition,
)
from clip_interp.errors import InputError

IMAGE_KEYS = [f"img_{i:03d}.png" for i in range(5)]
SHARD_SIZE = 2


def write_shard(path, keys, rows=None, record=True, recorded_keys=None):
    """A shard file of ``keys`` (every dataset ``rows`` long, default one per key) with a tiny model's shapes,
    its completion record of ``recorded_keys`` (default ``keys``) unless ``record`` is false."""
    rows = len(keys) if rows is None else rows
    shapes = {"embedding": (4,), "embedding_term": (4,), "heads": (2, 3, 4), "attn_bias": (2, 4), "mlps": (2, 4),
              "ln_bias": (4,), "embedding_norm": (), "class_attention": (2, 4)}
    with h5py.File(path, "w") as f:
        f.attrs.update({"model": "toy", "convention": "per_component", "units": UNITS, "n_layers": 2,
                        "n_heads": 3})
        f.create_dataset("keys", data=np.asarray(keys, dtype=object), dtype=h5py.string_dtype())
        for name in STORE_FIELDS:
            f.create_dataset(name, data=np.zeros((rows, *shapes[name]), dtype=np.float32))
        if record:
            f.attrs[COMPLETION_ATTRIBUTE] = completion_record(keys if recorded_keys is None else recorded_keys)
    return path


def good_shards(folder):
    return [write_shard(folder / f"shard_{k:05d}.h5", IMAGE_KEYS[k * SHARD_SIZE:(k + 1) * SHARD_SIZE])
            for k in range(3)]


def test_shards_with_their_completion_record_pass_and_gather(tmp_path):
    parts = good_shards(tmp_path)
    assert shard_problems(parts[0], IMAGE_KEYS[:2]) is None
    assert verify_shards(parts, IMAGE_KEYS, SHARD_SIZE) == []
    gather_shards(parts, tmp_path / "all.h5", image_keys=IMAGE_KEYS, shard_size=SHARD_SIZE)
    with h5py.File(tmp_path / "all.h5", "r") as f:
        assert f["heads"].shape == (5, 2, 3, 4)
        assert COMPLETION_ATTRIBUTE not in f.attrs  # the record describes a shard, not the gathered file


def test_a_shard_without_its_completion_record_is_named_with_the_rerun(tmp_path):
    parts = good_shards(tmp_path)
    write_shard(parts[1], IMAGE_KEYS[2:4], record=False)
    lines = verify_shards(parts, IMAGE_KEYS, SHARD_SIZE)
    assert len(lines) == 1 and str(parts[1]) in lines[0] and "no completion record" in lines[0]
    with pytest.raises(InputError) as err:
        gather_shards(parts, tmp_path / "all.h5", image_keys=IMAGE_KEYS, shard_size=SHARD_SIZE)
    message = str(err.value)
    assert f"rm {parts[1]} && snakemake --rerun-incomplete" in message and str(parts[0]) not in message
    assert not (tmp_path / "all.h5").exists()


@pytest.mark.parametrize("shard_kwargs, expected", [
    ({"keys": IMAGE_KEYS[2:4], "rows": 1}, "records 2 rows but holds"),
    ({"keys": IMAGE_KEYS[2:4], "recorded_keys": ["other_a", "other_b"]}, "image keys other than those it recorded"),
    ({"keys": IMAGE_KEYS[2:3]}, "holds 1 images ('img_002.png'), but its rows of the image list are 2 images"),
    ({"keys": ["img_009.png", "img_010.png"]},
     "its rows of the image list are 2 images ('img_002.png'..'img_003.png')"),
], ids=["row-count", "keys-digest", "fewer-rows", "other-images"])
def test_a_shard_with_wrong_rows_or_keys_is_named(tmp_path, shard_kwargs, expected):
    parts = good_shards(tmp_path)
    write_shard(parts[1], **shard_kwargs)
    lines = verify_shards(parts, IMAGE_KEYS, SHARD_SIZE)
    assert len(lines) == 1 and lines[0].startswith(f"shard {parts[1]} ") and expected in lines[0], lines


def test_a_missing_shard_of_the_image_list_is_counted(tmp_path):
    parts = good_shards(tmp_path)[:2]
    lines = verify_shards(parts, IMAGE_KEYS, SHARD_SIZE)
    assert lines == ["2 shard files for an image list of 5 images, which makes 3 shards of 2"]


def test_the_shard_writer_records_its_rows_and_keys(tiny_clip, tmp_path):
    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (20, 16), colour).save(paths[-1])
    keys = ["a", "b", "c"]
    write_decomposition(tiny_clip, paths, keys, tmp_path / "shard.h5", model_id="tiny", dtype="float32", batch_size=2)
    with h5py.File(tmp_path / "shard.h5", "r") as f:
        assert json.loads(f.attrs[COMPLETION_ATTRIBUTE]) == {"rows": 3, "keys_sha256": keys_digest(keys)}
    assert shard_problems(tmp_path / "shard.h5", keys) is None
    assert "its rows of the image list are 2 images" in shard_problems(tmp_path / "shard.h5", keys[:2])


def test_a_shard_of_raw_terms_is_named_and_a_raw_store_refused(tmp_path):
    """Shards written before the stores held terms divided by ||e|| are named by the gather; such a store is
    refused by the reader, with what to delete."""
    from clip_interp.contribution_store import DecompositionStore

    parts = good_shards(tmp_path)
    with h5py.File(parts[2], "a") as f:
        del f.attrs["units"]
    assert "units of the image embedding" in shard_problems(parts[2])
    with pytest.raises(InputError, match="shard_00002"):
        gather_shards(parts, tmp_path / "all.h5", image_keys=IMAGE_KEYS, shard_size=SHARD_SIZE)
    with pytest.raises(InputError, match="divided by"):
        DecompositionStore(parts[2])
