"""The decomposition store (shards, gather, reader) and the study's data readers, with every error path."""

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clip_interp.decomposition.components import decompose
from clip_interp.decomposition.data import (
    ImageNetSegmentation,
    read_description_pool,
    read_imagenet_val,
    read_waterbirds,
    scan_image_folder,
)
from clip_interp.decomposition.store import DecompositionStore, gather_shards, n_shards, shard_rows, write_decomposition
from clip_interp.decomposition.table import FIELDS
from clip_interp.errors import InputError


def _image(path: Path, colour=(200, 30, 30), size=(20, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


# --------------------------------------------------------------------------- store


def test_shard_rows_cover_the_images_once():
    slices = [shard_rows(10, 4, k) for k in range(n_shards(10, 4))]
    assert [(s.start, s.stop) for s in slices] == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(InputError, match="shards 0..2"):
        shard_rows(10, 4, 3)
    with pytest.raises(InputError, match="shard_size"):
        shard_rows(10, 0, 0)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_shards_gather_to_the_decomposition(tiny_clip, tmp_path, dtype, one_thread):
    paths = [_image(tmp_path / "img" / f"{i}.png", (30 * i, 200 - 20 * i, 90)) for i in range(5)]
    keys = [p.name for p in paths]
    parts = []
    for k in range(n_shards(5, 2)):
        sl = shard_rows(5, 2, k)
        parts.append(tmp_path / f"part{k}.h5")
        write_decomposition(tiny_clip, paths[sl], keys[sl], parts[-1], model_id="toy", dtype=dtype, batch_size=1,
                            labels=list(range(sl.start, sl.stop)))
    gather_shards(parts, tmp_path / "all.h5")
    store = DecompositionStore(tmp_path / "all.h5")
    assert store.keys == keys and store.labels.tolist() == [0, 1, 2, 3, 4] and store.convention == "uniform"
    from clip_interp.images import load_images

    expected = decompose(tiny_clip.vision, load_images(paths, tiny_clip.preprocess), convention="uniform").unit()
    rows = list(store.batches(3))
    assert [r for r, _ in rows] == [slice(0, 3), slice(3, 5)]
    tol = 1e-5 if dtype == "float32" else 2e-3
    for name in (*FIELDS, "embedding_norm", "class_attention"):
        stored = torch.cat([t[name] for _, t in rows])
        torch.testing.assert_close(stored, getattr(expected, name), atol=tol, rtol=tol)
    stored = {name: torch.cat([t[name] for _, t in rows]) for name in rows[0][1]}
    total = (stored["embedding_term"] + stored["heads"].sum((1, 2)) + stored["attn_bias"].sum(1)
             + stored["mlps"].sum(1) + stored["ln_bias"])
    torch.testing.assert_close(total, stored["embedding"], atol=tol * 10, rtol=tol * 10)  # the unit embedding
    raw = tiny_clip.vision.run(load_images(paths, tiny_clip.preprocess)).embedding
    torch.testing.assert_close(stored["embedding"] * stored["embedding_norm"].unsqueeze(1), raw, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(store.head(2, 1), expected.heads[:, 1, 1], atol=tol, rtol=tol)
    with h5py.File(parts[0], "r") as f:
        assert f["heads"].dtype == np.dtype(dtype) and f["embedding"].dtype == np.float32


def test_store_errors(tiny_clip, tmp_path):
    path = _image(tmp_path / "a.png")
    with pytest.raises(InputError, match="dtype"):
        write_decomposition(tiny_clip, [path], ["a"], tmp_path / "x.h5", model_id="toy", dtype="int8")
    with pytest.raises(InputError, match="do not match"):
        write_decomposition(tiny_clip, [path], ["a", "b"], tmp_path / "x.h5", model_id="toy")
    with pytest.raises(InputError, match="missing"):
        write_decomposition(tiny_clip, [tmp_path / "nope.png"], ["n"], tmp_path / "x.h5", model_id="toy")
    assert not (tmp_path / "x.h5").exists()  # nothing half-written
    with pytest.raises(InputError, match="re-run its rule"):
        gather_shards([tmp_path / "missing.h5"], tmp_path / "all.h5")
    with pytest.raises(InputError, match="no decomposition shards"):
        gather_shards([], tmp_path / "all.h5")
    with pytest.raises(InputError, match="run the decomposition rule"):
        DecompositionStore(tmp_path / "absent.h5")
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f.create_dataset("keys", data=np.asarray(["a"], dtype=object), dtype=h5py.string_dtype())
        f.attrs["units"] = "unit_embedding"
    with pytest.raises(InputError, match="lacks"):
        DecompositionStore(tmp_path / "partial.h5")


# --------------------------------------------------------------------------- image folders and ImageNet


def test_image_folder_counts_and_reports_unreadable_images(tmp_path):
    _image(tmp_path / "a.png")
    _image(tmp_path / "sub" / "b.jpg")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    images = scan_image_folder(tmp_path)
    assert images.keys == ["a.png", "sub/b.jpg"] and images.labels is None
    assert len(images.skipped) == 1 and images.skipped[0][0].endswith("broken.png")
    assert images.report()["skipped"] == 1


def test_image_folder_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no files"):
        scan_image_folder(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"junk")
    with pytest.raises(InputError, match="no readable images"):
        scan_image_folder(tmp_path / "bad")


def test_imagenet_class_folders(tmp_path):
    for wnid, n in (("n02", 2), ("n01", 1), ("n03", 1)):
        for i in range(n):
            _image(tmp_path / wnid / f"{wnid}_{i}.JPEG")
    (tmp_path / "n03" / "corrupt.JPEG").write_bytes(b"")
    images = read_imagenet_val(tmp_path, n_classes=3)
    assert images.keys == ["n01/n01_0.JPEG", "n02/n02_0.JPEG", "n02/n02_1.JPEG", "n03/n03_0.JPEG"]
    assert images.labels == [0, 1, 1, 2] and len(images.skipped) == 1
    with pytest.raises(InputError, match="3 class folders, not 1000"):
        read_imagenet_val(tmp_path)
    with pytest.raises(InputError, match="cannot be downloaded"):
        read_imagenet_val(tmp_path / "absent")


def test_imagenet_flat_folder_with_labels_file(tmp_path):
    for name in ("ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000001.JPEG"):
        _image(tmp_path / "val" / name)
    labels = tmp_path / "val.txt"
    labels.write_text("ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG 970\n\n")
    images = read_imagenet_val(tmp_path / "val", labels)
    assert images.labels == [65, 970]
    with pytest.raises(InputError, match="does not exist"):
        read_imagenet_val(tmp_path / "val", tmp_path / "absent.txt")
    labels.write_text("ILSVRC2012_val_00000001.JPEG\n")
    with pytest.raises(InputError, match="line 1"):
        read_imagenet_val(tmp_path / "val", labels)
    labels.write_text("ILSVRC2012_val_00000001.JPEG 1000\n")
    with pytest.raises(InputError, match="outside 0..999"):
        read_imagenet_val(tmp_path / "val", labels)
    labels.write_text("ILSVRC2012_val_00000001.JPEG 1\n")
    with pytest.raises(InputError, match="have no line"):
        read_imagenet_val(tmp_path / "val", labels)
    labels.write_text("ILSVRC2012_val_00000001.JPEG 1\n"
                      "ILSVRC2012_val_00000002.JPEG 2\n"
                      "ILSVRC2012_val_00000003.JPEG 3\n")
    with pytest.raises(InputError, match="not in"):
        read_imagenet_val(tmp_path / "val", labels)



def test_imagenet_labels_by_wordnet_id_and_kaggle_csv(tmp_path):
    """A WordNet id's class index is its rank among all ids of the file; Kaggle's CSV matches file stems."""
    for name in ("ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000003.JPEG"):
        _image(tmp_path / "val" / name)
    labels = tmp_path / "val.txt"
    labels.write_text("ILSVRC2012_val_00000001.JPEG n04000000\nILSVRC2012_val_00000002.JPEG n01000000\n"
                      "ILSVRC2012_val_00000003.JPEG n02000000\n")
    assert read_imagenet_val(tmp_path / "val", labels, n_classes=3).labels == [2, 0, 1]
    with pytest.raises(InputError, match="names 3 WordNet ids, not 1000"):
        read_imagenet_val(tmp_path / "val", labels)
    kaggle = tmp_path / "LOC_val_solution.csv"
    kaggle.write_text("ImageId,PredictionString\nILSVRC2012_val_00000003,n02000000 1 2 30 40 n02000000 5 6 7 8\n"
                      "ILSVRC2012_val_00000001,n04000000 1 1 9 9\nILSVRC2012_val_00000002,n01000000 0 0 4 4\n")
    assert read_imagenet_val(tmp_path / "val", kaggle, n_classes=3).labels == [2, 0, 1]
    labels.write_text("490\n361\n171\n")
    with pytest.raises(InputError, match="ILSVRC2012_validation_ground_truth.txt"):
        read_imagenet_val(tmp_path / "val", labels)
    labels.write_text("ILSVRC2012_val_00000001.JPEG tench\n")
    with pytest.raises(InputError, match="neither a class index nor a WordNet id"):
        read_imagenet_val(tmp_path / "val", labels)

# --------------------------------------------------------------------------- ImageNet-segmentation


def _write_gtsegs(path: Path, images, masks, *, drop: str | None = None) -> None:
    """A small gtsegs_ijcv.mat look-alike: /value/img and /value/gt (N, 1) object references; an image stored
    (3, W, H), a ground truth as a (1, 1) reference array pointing at the (W, H) mask (MATLAB v7.3 layout)."""
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        img_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        gt_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        for i, (image, mask) in enumerate(zip(images, masks)):
            img_refs[i, 0] = refs.create_dataset(f"img{i}", data=image.transpose(2, 1, 0)).ref
            inner = refs.create_dataset(f"mask{i}", data=mask.T.astype(np.uint8))
            outer = np.empty((1, 1), dtype=h5py.ref_dtype)
            outer[0, 0] = inner.ref
            gt_refs[i, 0] = refs.create_dataset(f"gt{i}", data=outer).ref
        value = f.create_group("value")
        if drop != "img":
            value.create_dataset("img", data=img_refs)
        if drop != "gt":
            value.create_dataset("gt", data=gt_refs)


def test_gtsegs_reader_transposes_images_and_masks(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (5, 7, 3), dtype=np.uint8), rng.integers(0, 255, (4, 6, 3), dtype=np.uint8)]
    masks = [rng.random((5, 7)) > 0.5, rng.random((4, 6)) > 0.5]
    _write_gtsegs(tmp_path / "gtsegs_ijcv.mat", images, masks)
    data = ImageNetSegmentation(tmp_path / "gtsegs_ijcv.mat")
    assert len(data) == 2
    for (image, mask), want_image, want_mask in zip(data, images, masks):
        assert image.dtype == np.uint8 and image.shape == want_image.shape
        np.testing.assert_array_equal(image, want_image)
        np.testing.assert_array_equal(mask, want_mask)
    data.close()


def test_gtsegs_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        ImageNetSegmentation(tmp_path / "absent.mat")
    (tmp_path / "old.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 200)
    with pytest.raises(InputError, match="v7.3"):
        ImageNetSegmentation(tmp_path / "old.mat")
    image, mask = np.zeros((3, 4, 3), np.uint8), np.zeros((3, 4), bool)
    _write_gtsegs(tmp_path / "no_gt.mat", [image], [mask], drop="gt")
    with pytest.raises(InputError, match="value/gt"):
        ImageNetSegmentation(tmp_path / "no_gt.mat")
    with h5py.File(tmp_path / "flat.mat", "w") as f:
        f.create_dataset("value/img", data=np.zeros((2, 2)))
        f.create_dataset("value/gt", data=np.zeros((3, 1)))
    with pytest.raises(InputError, match=r"\(N, 1\)"):
        ImageNetSegmentation(tmp_path / "flat.mat")


# --------------------------------------------------------------------------- Waterbirds and description pools


def _waterbirds(root: Path, rows, columns=("img_filename", "y", "split", "place")) -> None:
    frame = pd.DataFrame(rows, columns=["img_filename", "y", "split", "place"])[list(columns)]
    root.mkdir(parents=True, exist_ok=True)
    frame.to_csv(root / "metadata.csv", index=False)
    for name in frame.get("img_filename", []):
        _image(root / name)


def test_waterbirds_metadata(tmp_path):
    rows = [("001.Albatross/a.jpg", 1, 2, 0), ("002.Sparrow/b.jpg", 0, 2, 1), ("002.Sparrow/c.jpg", 0, 0, 0)]
    _waterbirds(tmp_path, rows)
    test = read_waterbirds(tmp_path)
    assert test["img_filename"].tolist() == ["001.Albatross/a.jpg", "002.Sparrow/b.jpg"]
    assert test["y"].tolist() == [1, 0] and test["place"].tolist() == [0, 1]
    assert Path(test["image_path"][0]).is_file()
    assert len(read_waterbirds(tmp_path, split="train")) == 1
    with pytest.raises(InputError, match="no rows in the val split"):
        read_waterbirds(tmp_path, split="val")
    with pytest.raises(InputError, match="unknown Waterbirds split"):
        read_waterbirds(tmp_path, split="dev")


def test_waterbirds_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_waterbirds(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no metadata.csv"):
        read_waterbirds(tmp_path / "empty")
    _waterbirds(tmp_path / "cols", [("a.jpg", 1, 2, 0)], columns=("img_filename", "y", "split"))
    with pytest.raises(InputError, match=r"lacks the columns \['place'\]"):
        read_waterbirds(tmp_path / "cols")
    _waterbirds(tmp_path / "values", [("a.jpg", 2, 2, 0)])
    with pytest.raises(InputError, match="column 'y' has values \\[2\\]"):
        read_waterbirds(tmp_path / "values")
    _waterbirds(tmp_path / "images", [("a.jpg", 1, 2, 0)])
    (tmp_path / "images" / "a.jpg").unlink()
    with pytest.raises(InputError, match="1 Waterbirds images .* are missing"):
        read_waterbirds(tmp_path / "images")


def test_description_pools(tmp_path, shared_data):
    pool = read_description_pool(shared_data / "text_descriptions" / "image_descriptions_general.txt")
    assert len(pool.texts) == 3498 and pool.texts[0] == "A badge" and pool.blank_lines == 0
    words = read_description_pool(shared_data / "text_descriptions" / "google_3498_english.txt")
    assert len(words.texts) == 3498 and words.texts[:3] == ["the", "of", "and"]
    path = tmp_path / "pool.txt"
    path.write_text("a red circle\n\n  a blue square  \na red circle\n")
    small = read_description_pool(path)
    assert small.texts == ["a red circle", "a blue square", "a red circle"]
    assert small.blank_lines == 1 and small.duplicates == 1
    with pytest.raises(InputError, match="does not exist"):
        read_description_pool(tmp_path / "absent.txt")
    path.write_text("\n \n")
    with pytest.raises(InputError, match="no descriptions"):
        read_description_pool(path)
