import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_interp.demo.negation_benchmark import COLOURS, SHAPES, generate_existence_benchmark, sentence
from clip_interp.errors import InputError

VALSE_KEYS = {
    "caption", "foil", "image_file", "mturk", "provenance_of_foils", "dataset", "dataset_idx",
    "linguistic_phenomena", "split", "classes", "classes_foil", "answer", "declarative_statement",
    "declarative_statement_foils", "original_split",
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthetic")
    summary = generate_existence_benchmark(out, n_eval=60, n_train=30, seed=3)
    return out, summary


def _entries(out: Path) -> dict:
    return json.loads((out / "existence.json").read_text())


def _train(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]


def _all_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path):
    first = generate_existence_benchmark(tmp_path / "a", n_eval=20, n_train=10, seed=7)
    second = generate_existence_benchmark(tmp_path / "b", n_eval=20, n_train=10, seed=7)
    a, b = _all_bytes(tmp_path / "a"), _all_bytes(tmp_path / "b")
    assert len(a) == 20 + 20 + 10 + 2
    assert a == b
    assert {k: v for k, v in first.items() if k != "out_dir"} == {k: v for k, v in second.items() if k != "out_dir"}
    generate_existence_benchmark(tmp_path / "c", n_eval=20, n_train=10, seed=8)
    c = _all_bytes(tmp_path / "c")
    assert a["existence.json"] != c["existence.json"]
    assert a["images/eval_00000.png"] != c["images/eval_00000.png"]


def test_negation_is_balanced_and_numbers_mixed(bench):
    out, summary = bench
    entries = list(_entries(out).values())
    in_caption = [e for e in entries if e["provenance_of_foils"] == "zero_to_something"]
    in_foil = [e for e in entries if e["provenance_of_foils"] == "something_to_zero"]
    assert len(in_caption) == len(in_foil) == 30
    assert summary["negation_in_caption"] == summary["negation_in_foil"] == 30
    for group in (in_caption, in_foil):
        assert sum(e["plural"] for e in group) == 15
    for e in in_caption:
        assert " no " in e["caption"] and " no " not in e["foil"]
    for e in in_foil:
        assert " no " in e["foil"] and " no " not in e["caption"]


def test_sentences_follow_raw_valse_wording(bench):
    out, _ = bench
    for e in _entries(out).values():
        colour, shape = e["subject"]["colour"], e["subject"]["shape"]
        affirmative = sentence(colour, shape, plural=e["plural"], negated=False)
        negative = sentence(colour, shape, plural=e["plural"], negated=True)
        assert {e["caption"], e["foil"]} == {affirmative, negative}
        assert "some" not in e["caption"] and "some" not in e["foil"]
    assert sentence("red", "circle", plural=False, negated=False) == "There is a red circle."
    assert sentence("orange", "circle", plural=False, negated=False) == "There is an orange circle."
    assert sentence("red", "circle", plural=False, negated=True) == "There is no red circle."
    assert sentence("red", "square", plural=True, negated=False) == "There are red squares."
    assert sentence("red", "square", plural=True, negated=True) == "There are no red squares."
    assert sentence("red", "square", plural=True, negated=False, some=True) == "There are some red squares."


def test_valse_format(bench):
    out, _ = bench
    entries = _entries(out)
    assert len(entries) == 60
    for key, e in entries.items():
        assert VALSE_KEYS <= set(e), key
        assert e["dataset"] == "synthetic" and e["linguistic_phenomena"] == "existence"
        assert e["mturk"] == {"caption": 3, "foil": 0, "other": 0}
        assert e["declarative_statement"] == e["caption"]
        assert e["declarative_statement_foils"] == [e["foil"]]
        assert isinstance(e["dataset_idx"], str) and key.endswith(e["dataset_idx"].zfill(5))
        assert isinstance(e["classes_foil"], list) and e["answer"] == e["classes"]
        assert e["answer"] not in e["classes_foil"]
        assert (out / "images" / e["image_file"]).is_file()
        assert (out / "masks" / e["mask_file"]).is_file()


def test_keys_cover_the_real_valse_file(bench, shared_data):
    real = json.loads((shared_data / "valse" / "existence.json").read_text())
    real_keys = set().union(*(set(e) for e in real.values()))
    out, _ = bench
    for e in _entries(out).values():
        assert real_keys <= set(e)
        for key in real_keys:
            example = next(iter(real.values()))[key]
            assert type(e[key]) is type(example), key


def test_masks_match_presence_and_relative_size(bench):
    out, _ = bench
    for e in _entries(out).values():
        mask_values = np.asarray(Image.open(out / "masks" / e["mask_file"]))
        assert mask_values.shape == (64, 64)
        assert set(np.unique(mask_values)) <= {0, 255}
        mask = mask_values > 0
        absent = e["provenance_of_foils"] == "zero_to_something"
        assert (not mask.any()) == absent
        assert e["relative_size"] == pytest.approx(float(mask.mean()), abs=1e-12)
        subject = [e["subject"]["colour"], e["subject"]["shape"]]
        counts = {(o[0], o[1]): o[2] for o in e["objects"]}
        assert counts.get(tuple(subject), 0) == e["answer"]
        if absent:
            assert e["answer"] == 0
        else:
            assert e["answer"] in ((2, 3) if e["plural"] else (1,))
            rgb = np.asarray(Image.open(out / "images" / e["image_file"]).convert("RGB")).astype(float)
            mean_colour = rgb[mask].mean(axis=0)
            assert np.abs(mean_colour - np.asarray(COLOURS[subject[0]])).max() < 30


def test_subject_size_varies_widely(tmp_path):
    summary = generate_existence_benchmark(tmp_path, n_eval=200, n_train=0, seed=0)
    sizes = [e["relative_size"] for e in _entries(tmp_path).values() if e["answer"] > 0]
    assert min(sizes) < 0.01 and max(sizes) > 0.15
    assert summary["relative_size_present"]["min"] == min(sizes)
    assert (tmp_path / "train.jsonl").read_text() == ""


def test_training_pairs(bench):
    out, summary = bench
    lines = _train(out)
    assert summary["n_train_pairs"] == len(lines)
    eval_images = {e["image_file"] for e in _entries(out).values()}
    train_images = {line["image_file"] for line in lines}
    assert len(train_images) == 30 and not train_images & eval_images
    assert sum(line["caption_negated"] for line in lines) * 2 == len(lines)
    for line in lines:
        assert (out / "images" / line["image_file"]).is_file()
        subject = (line["subject"]["colour"], line["subject"]["shape"])
        present = subject in {(o[0], o[1]) for o in line["objects"]}
        assert present != line["caption_negated"]
        assert line["caption"] != line["foil"]
        assert line["caption"].replace(" no ", " ").replace(" a ", " ").replace(" an ", " ").replace(" some ", " ") == \
            line["foil"].replace(" no ", " ").replace(" a ", " ").replace(" an ", " ").replace(" some ", " ")
        assert subject[0] in COLOURS and subject[1] in SHAPES
    assert any("some" in line["caption"] or "some" in line["foil"] for line in lines)


@pytest.mark.parametrize("kwargs", [dict(n_eval=3, n_train=1), dict(n_eval=0, n_train=1),
                                    dict(n_eval=4, n_train=-1), dict(n_eval=4, n_train=1, seed=-1)])
def test_bad_arguments_raise_input_error(tmp_path, kwargs):
    with pytest.raises(InputError, match="n_eval|n_train|seed"):
        generate_existence_benchmark(tmp_path, **kwargs)
