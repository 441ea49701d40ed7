"""The activation store (clip_interp.store): writers, readers, key matching and lazily selected rows, on small
temporary HDF5 files with known values, and the store writers on the random-init tiny model."""

from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from clip_interp.errors import InputError
from clip_interp.store import (
    RowWriter,
    SelectedRows,
    decode_keys,
    match_rows,
    read_array,
    read_keys,
    require_datasets,
    row_dataset,
    unique_key_index,
    write_header,
    write_image_activations,
    write_text_activations,
)

KEYS = ["k0", "k1", "k2", "k3", "k4"]


@pytest.fixture
def store(tmp_path) -> Path:
    """A store file with five keys, ``values`` (5, 2): row i is (10 i, 10 i + 1), and a group ``g/embedding``."""
    path = tmp_path / "store.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("keys", data=np.asarray(KEYS, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("values", data=np.array([values_row(i) for i in range(5)]))
        f.create_group("g").create_dataset("embedding", data=np.eye(5, 3, dtype=np.float32))
    return path


def values_row(i: int) -> list[int]:
    """Row ``i`` of the fixture's ``values``: (10 i, 10 i + 1)."""
    return [10 * i, 10 * i + 1]


# --------------------------------------------------------------------------- writers


def test_row_dataset_is_chunked_by_row_without_timestamps(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        stacked = row_dataset(f, "stacked", (4, 3, 2), np.float16, compression="lzf")
        flat = row_dataset(f, "flat", (4,), np.int32)
        assert stacked.chunks == (1, 3, 2) and stacked.compression == "lzf" and stacked.dtype == np.float16
        assert flat.chunks is None and flat.shape == (4,)
        assert not stacked.id.get_create_plist().get_obj_track_times()


def fake_model(spec=None):
    tower = SimpleNamespace(kind="text", n_layers=3, n_heads=4, d_model=8)
    return SimpleNamespace(spec=spec or {"name": "Toy", "backend": "open_clip"}, logit_scale=100.0), tower


def test_write_header_records_keys_model_and_tower(tmp_path):
    model, tower = fake_model()
    with h5py.File(tmp_path / "h.h5", "w") as f:
        write_header(f, ["a", "b"], model_id="toy", model=model, tower=tower,
                     metadata={"variant": "rephrased", "layers": [1, 2], "extra": {"x": 1}})
    with h5py.File(tmp_path / "h.h5", "r") as f:
        attrs = dict(f.attrs)
    assert read_keys(tmp_path / "h.h5") == ["a", "b"]
    assert attrs["model"] == "toy" and attrs["model_spec"] == '{"backend": "open_clip", "name": "Toy"}'
    assert (attrs["tower"], attrs["n_layers"], attrs["n_heads"], attrs["d_model"]) == ("text", 3, 4, 8)
    assert attrs["logit_scale"] == 100.0 and attrs["variant"] == "rephrased"
    assert attrs["layers"] == "[1, 2]" and attrs["extra"] == '{"x": 1}'  # lists and mappings as JSON


def test_row_writer_creates_each_dataset_on_first_write_in_the_stores_dtype(tmp_path):
    with h5py.File(tmp_path / "w.h5", "w") as f:
        writer = RowWriter(f.create_group("g"), 4, "float16")
        writer.write("resid", slice(0, 2), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        writer.write("resid", slice(2, 4), torch.tensor([[5.0, 6.0], [7.0, 8.0]]))
        writer.write("embedding", slice(0, 4), torch.full((4, 3), 1 / 3), full_precision=True)
        writer.write("pattern", slice(0, 4), torch.zeros(4, 2, 2))
        assert list(writer.datasets) == ["resid", "embedding", "pattern"]
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert f["g/resid"].dtype == np.float16 and f["g/resid"].chunks == (1, 2)
        assert f["g/resid"][:].tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
        assert f["g/embedding"].dtype == np.float32 and np.all(f["g/embedding"][:] == np.float32(1 / 3))
        assert f["g/pattern"].compression == "lzf" and f["g/resid"].compression is None


def sentences(tok, texts):
    return [tok.encode(t) for t in texts]


def test_text_store_round_trip_on_the_tiny_model(tiny_clip, tmp_path):
    """Embeddings (float32) and sites (the store's dtype) equal one forward of all rows; ids and lengths are kept;
    the same inputs give the same bytes."""
    tok = tiny_clip.tokenizer
    groups = {"caption": sentences(tok, ["There is a dog.", "No cat.", "A red circle on grass."]),
              "foil": sentences(tok, ["There is no dog.", "A cat.", "A circle."])}
    keys = ["a", "b", "c"]
    path = tmp_path / "text.h5"
    write_text_activations(tiny_clip, keys, groups, path, model_id="toy", batch_size=2, dtype="float16",
                           metadata={"variant": "standard"}, progress=False)
    n_layers, n_heads, d_model = tiny_clip.text.n_layers, tiny_clip.text.n_heads, tiny_clip.text.d_model
    assert read_keys(path) == keys
    with h5py.File(path, "r") as f:
        assert f.attrs["tower"] == "text" and f.attrs["variant"] == "standard" and f.attrs["n_layers"] == n_layers
        for name, seqs in groups.items():
            t_max = max(len(s) for s in seqs)
            assert f[name]["length"][:].tolist() == [len(s) for s in seqs]
            assert np.array_equal(f[name]["ids"][:], tok.pad(seqs, t_max).numpy())
            with torch.no_grad():
                out = tiny_clip.encode_text(tok.pad(seqs, t_max), cache=["resid", "pattern"])
            assert f[name]["embedding"].dtype == np.float32 and f[name]["resid"].dtype == np.float16
            assert f[name]["resid"].shape == (3, n_layers + 1, t_max, d_model)
            assert f[name]["pattern"].shape == (3, n_layers, n_heads, t_max, t_max)
            assert np.allclose(f[name]["embedding"][:], out.embedding.numpy(), atol=1e-5)
            assert np.allclose(f[name]["resid"][:], out.cache.stack("resid").numpy().astype(np.float16), atol=1e-2)
    again = tmp_path / "again.h5"
    write_text_activations(tiny_clip, keys, groups, again, model_id="toy", batch_size=2, dtype="float16",
                           metadata={"variant": "standard"}, progress=False)
    assert again.read_bytes() == path.read_bytes()


def test_text_store_sites_subset_and_refusals(tiny_clip, tmp_path):
    tok = tiny_clip.tokenizer
    seqs = sentences(tok, ["There is a dog.", "No cat."])
    path = tmp_path / "text.h5"
    write_text_activations(tiny_clip, ["a", "b"], {"caption": seqs}, path, model_id="toy", sites=["resid"],
                           progress=False)
    with h5py.File(path, "r") as f:
        assert sorted(f["caption"]) == ["embedding", "ids", "length", "resid"]
    with pytest.raises(ValueError, match=r"text store sites \['mlp_out'\] are not among"):
        write_text_activations(tiny_clip, ["a", "b"], {"caption": seqs}, tmp_path / "x.h5", model_id="toy",
                               sites=["resid", "mlp_out"], progress=False)
    with pytest.raises(InputError, match="group 'caption' has 1 sentences for 2 keys"):
        write_text_activations(tiny_clip, ["a", "b"], {"caption": seqs[:1]}, tmp_path / "x.h5", model_id="toy",
                               progress=False)
    with pytest.raises(InputError, match=r"1 sequence\(s\) without SOT and EOT \(keys \['b'\]\)"):
        write_text_activations(tiny_clip, ["a", "b"], {"caption": [seqs[0], [tok.sot_id]]}, tmp_path / "x.h5",
                               model_id="toy", progress=False)
    assert not (tmp_path / "x.h5").exists() and not list(tmp_path.glob(".x.h5.*")), "a refused store leaves no file"


def test_image_store_views_on_the_tiny_model(tiny_clip, tmp_path):
    """Each view's group holds the embedding of its transform of the pixels and its own sites."""
    from clip_interp.images import load_images

    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        paths.append(tmp_path / f"img{i}.png")
        Image.new("RGB", (40, 32), colour).save(paths[-1])

    def flip(pixels):
        return pixels.flip(-1)

    path = tmp_path / "image.h5"
    write_image_activations(tiny_clip, ["a", "b", "c"], paths, path, model_id="toy", batch_size=2,
                            views={"plain": (None, ["resid"]), "flipped": (flip, [])}, progress=False)
    pixels = load_images(paths, tiny_clip.preprocess)
    with torch.no_grad():
        plain = tiny_clip.encode_image(pixels, cache=["resid"])
        flipped = tiny_clip.encode_image(flip(pixels), cache=[])
    with h5py.File(path, "r") as f:
        assert decode_keys(f["image_file"][:]) == ["img0.png", "img1.png", "img2.png"]
        assert f.attrs["tower"] == "vision" and sorted(f["flipped"]) == ["embedding"]
        assert np.allclose(f["plain/embedding"][:], plain.embedding.numpy(), atol=1e-5)
        assert np.allclose(f["plain/resid"][:], plain.cache.stack("resid").numpy(), atol=1e-5)
        assert np.allclose(f["flipped/embedding"][:], flipped.embedding.numpy(), atol=1e-5)
    with pytest.raises(InputError, match="missing"):
        write_image_activations(tiny_clip, ["a", "z"], [paths[0], tmp_path / "absent.png"], tmp_path / "x.h5",
                                model_id="toy", views={"plain": (None, [])}, progress=False)
    assert not (tmp_path / "x.h5").exists()


# --------------------------------------------------------------------------- readers


def test_decode_keys_accepts_bytes_and_strings():
    assert decode_keys([b"a", "b", np.str_("c"), 7]) == ["a", "b", "c", "7"]


def test_read_keys_and_read_array(store):
    assert read_keys(store) == KEYS
    assert read_array(store, "values").tolist() == [values_row(i) for i in range(5)]
    assert read_array(store, "values", [1, 3]).tolist() == [values_row(1), values_row(3)]
    assert read_array(store, "g/embedding", slice(0, 2)).tolist() == [[1, 0, 0], [0, 1, 0]]
    with pytest.raises(InputError, match=r"has no dataset 'resid'; delete it and re-run its rule"):
        read_array(store, "resid")


def test_require_datasets_names_the_absent_ones(store):
    with h5py.File(store, "r") as f:
        require_datasets(f, ["keys", "values", "g/embedding"], store)
        with pytest.raises(InputError, match=r"lacks \['resid', 'g/pattern'\]"):
            require_datasets(f, ["keys", "resid", "g/pattern"], store)


def test_unique_key_index_and_its_duplicates():
    assert unique_key_index(["b", "a", "c"], "t") == {"b": 0, "a": 1, "c": 2}
    with pytest.raises(InputError, match=r"t.parquet lists 2 duplicate key\(s\), e.g. \['a', 'b'\]"):
        unique_key_index(["a", "b", "a", "b", "c"], "t.parquet")


def test_match_rows_by_key_not_by_position():
    rows = match_rows(["c", "a", "a"], ["a", "b", "c"], what="instances", where="store.h5")
    assert rows.dtype == np.int64 and rows.tolist() == [2, 0, 0]
    assert match_rows([], ["a"], what="instances", where="store.h5").tolist() == []
    with pytest.raises(InputError, match=r"2 of 3 instances are absent from store.h5 \(2 rows\), e.g. \['x', 'y'\]"):
        match_rows(["a", "x", "y"], ["a", "b"], what="instances", where="store.h5")
    with pytest.raises(InputError, match="duplicate key"):
        match_rows(["a"], ["a", "a"], what="instances", where="store.h5")


class CountingDataset:
    """An array that records each index it is read with (as an h5py dataset would be asked)."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.reads = array, array.shape, array.dtype, []

    def __getitem__(self, index):
        self.reads.append(index)
        return self.array[index]


def test_selected_rows_reads_in_the_requested_order():
    data = CountingDataset(np.arange(12).reshape(6, 2))
    view = SelectedRows(data, [4, 1, 1, 5])
    assert len(view) == 4 and view.shape == (4, 2)
    assert view[0:4].tolist() == [[8, 9], [2, 3], [2, 3], [10, 11]]
    assert data.reads == [[1, 4, 5]]  # increasing unique rows, fetched once
    assert view[1:3].tolist() == [[2, 3], [2, 3]]
    assert view[:0].shape == (0, 2) and view[:0].dtype == data.dtype


def test_selected_rows_reads_consecutive_rows_as_one_slice():
    data = CountingDataset(np.arange(12).reshape(6, 2))
    assert SelectedRows(data, [3, 2, 4])[:].tolist() == [[6, 7], [4, 5], [8, 9]]
    assert data.reads == [slice(2, 5)]


def test_selected_rows_on_an_hdf5_dataset(store):
    with h5py.File(store, "r") as f:
        view = SelectedRows(f["values"], np.array([3, 0, 4]))
        assert view[:].tolist() == [values_row(3), values_row(0), values_row(4)]
        assert view[2:].tolist() == [values_row(4)]


def test_selected_rows_outside_the_dataset_are_refused(store):
    with h5py.File(store, "r") as f:
        with pytest.raises(InputError, match=r"row selection outside 0..4 of /values"):
            SelectedRows(f["values"], [0, 5])
    with pytest.raises(InputError, match=r"row selection outside 0..2 of array"):
        SelectedRows(np.zeros((3, 1)), [-1])
    assert len(SelectedRows(np.zeros((3, 1)), [])) == 0
