"""Bad input never yields a wrong table (issue 8), at the level of the functions the rules call.

Each case asserts that the message names the file, key or value, that nothing finished-looking is
left behind, and (where a fix applies) that the fixed input gives the same output as a clean run.
The Snakemake runs of the same cases are in tests/test_workflow_bad_input_runs.py (slow).
"""

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from clip_interp import io
from clip_interp.config import device_problem, model_path_problems, text_layer_count, text_layer_problems
from clip_interp.errors import InputError, SourceError
from clip_interp.images import open_image, read_images
from clip_interp.negation.positions import add_positions
from clip_interp.sources import fetch_source, local_fingerprint
from clip_interp.workflow import run_rule

REPO = Path(__file__).resolve().parents[1]
LONG = "There is no dog" + " and a very small red cat" * 14 + "."  # about 100 CLIP tokens


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- 1. over-long sentences ---------------------------------------------------------------------------


def pairs(negated_first: str) -> pd.DataFrame:
    return pd.DataFrame({"key": ["long", "ok"], "negation": ["foil", "caption"],
                         "negated": [negated_first, "There are no people."],
                         "non_negated": ["There is a dog.", "There are some people."]})


def test_over_long_sentences_are_excluded_counted_and_named(tok, nlp):
    out, report = add_positions(pairs(LONG), tok, nlp)
    assert out["key"].tolist() == ["ok"], "an over-long instance must not reach the caches and scores"
    assert report["too_long"] == 1
    entry = report["too_long_entries"][0]
    assert entry["key"] == "long" and entry["sentence"] == "negated" and entry["tokens"] > 77
    assert entry["context_length"] == 77
    assert all(len(ids) >= 2 for ids in out["negated_ids"]) and all(len(ids) >= 2 for ids in out["non_negated_ids"])
    fixed, fixed_report = add_positions(pairs("There is no dog."), tok, nlp)
    clean, _ = add_positions(pairs("There is no dog."), tok, nlp)
    assert fixed_report["too_long"] == 0 and len(fixed) == 2
    pd.testing.assert_frame_equal(fixed, clean)


def test_text_store_refuses_an_empty_sequence(tiny_clip, tmp_path):
    from clip_interp.negation.caches import write_text_cache

    path = tmp_path / "text.h5"
    ids = tiny_clip.tokenizer.encode("There is no dog.")
    with pytest.raises(InputError, match=r"'negated'.*keys \['long'\].*empty sentence cannot be scored"):
        write_text_cache(tiny_clip, ["ok", "long"], {"negated": [ids, []], "non_negated": [ids, ids]}, path,
                         model_id="tiny", progress=False)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_every_table_written_downstream_carries_the_exclusion(tmp_path):
    positions = tmp_path / "positions.parquet"
    record = io.exclusion_record(positions, "too_long", "longer than the context", ["k2", "k1"])
    io.write_parquet(pd.DataFrame({"key": ["k3"]}), positions, {"variant": "standard"}, excluded=[record])
    try:
        inherited = io.inherit_exclusions([positions, tmp_path / "cache.h5"])
        io.write_parquet(pd.DataFrame({"key": ["k3"], "d": [0.5]}), tmp_path / "scores.parquet", {"model": "m"})
        io.write_parquet(pd.DataFrame({"n": [1]}), tmp_path / "table1.parquet")
    finally:
        io.inherit_exclusions([])
    assert inherited == [record] and record["keys"] == ["k1", "k2"] and record["count"] == 2
    for name in ("positions", "scores", "table1"):
        assert io.read_parquet_metadata(tmp_path / f"{name}.parquet")["excluded"] == [record], name
    io.write_parquet(pd.DataFrame({"n": [1]}), tmp_path / "unrelated.parquet")
    assert "excluded" not in io.read_parquet_metadata(tmp_path / "unrelated.parquet")


# --- 2. a local source changed in place -----------------------------------------------------------------


def test_fingerprint_of_a_local_file_and_folder_follows_their_content(tmp_path):
    valse = tmp_path / "existence.json"
    valse.write_text('{"a": 1}')
    before = local_fingerprint(str(valse))
    stat = valse.stat()
    valse.write_text('{"b": 2}')
    os.utime(valse, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and time, new content
    assert local_fingerprint(str(valse)) != before
    assert local_fingerprint("file://" + str(valse)) == local_fingerprint(str(valse))
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(folder / "sub" / "a.png")
    first = local_fingerprint(str(folder))
    assert first == local_fingerprint(str(folder)) and first["files"] == 1
    time.sleep(0.01)
    Image.new("RGB", (8, 8), "blue").save(folder / "sub" / "a.png")  # an image replaced at the same path
    assert local_fingerprint(str(folder)) != first
    assert local_fingerprint("https://example.org/existence.json") is None
    assert local_fingerprint(str(tmp_path / "absent.json")) == {"missing": str(tmp_path / "absent.json")}


# --- 3. a benchmark file with no entries, or a list ---------------------------------------------------


@pytest.mark.parametrize("content, expected", [
    ("{}", r"empty JSON object \(no entries\)"),
    ('[{"caption": "There is a dog."}]', r"holds a list at the top level, but a JSON object of entries is expected"),
])
def test_fetch_rejects_a_benchmark_without_entries(tmp_path, content, expected):
    source = tmp_path / "existence.json"
    source.write_text(content)
    dest = tmp_path / "raw" / "existence.json"
    with pytest.raises(SourceError, match="negation.sources.valse_existence.*existence.json.*" + expected):
        fetch_source({"url": str(source)}, dest, name="negation.sources.valse_existence", kind="json",
                     json_shape="object")
    assert not dest.exists() and not list(dest.parent.iterdir())
    source.write_text('{"k": {"caption": "There is a dog."}}')
    fetch_source({"url": str(source)}, dest, name="negation.sources.valse_existence", kind="json", json_shape="object")
    clean = tmp_path / "clean.json"
    fetch_source({"url": str(source)}, clean, name="negation.sources.valse_existence", kind="json", json_shape="object")
    assert sha(dest) == sha(clean)


# --- 4. unreadable images ---------------------------------------------------------------------------------


@pytest.fixture
def damaged_images(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(good, quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not an image")
    return good, truncated, not_image


def to_array(image):
    import torch

    return torch.as_tensor(np.asarray(image.resize((16, 16)), dtype=np.float32)).permute(2, 0, 1)


def test_a_truncated_image_names_the_file_and_the_key(damaged_images):
    good, truncated, _ = damaged_images
    with pytest.raises(InputError, match=r"truncated\.jpg \(instance 'k7'\) cannot be read: image file is truncated"):
        open_image(truncated, "k7")
    with pytest.raises(InputError, match=r"truncated\.jpg \(instance 'k7'\)"):
        read_images([good, truncated], to_array, ["k1", "k7"], unreadable="stop")


def test_skip_policy_counts_and_lists_each_unreadable_image(damaged_images):
    good, truncated, not_image = damaged_images
    batch = read_images([good, truncated, not_image, good], to_array, ["a", "b", "c", "d"], unreadable="skip")
    assert batch.kept == [0, 3] and batch.pixels.shape == (2, 3, 16, 16)
    assert [s["key"] for s in batch.skipped] == ["b", "c"]
    assert batch.skipped[0]["file"] == str(truncated) and "truncated" in batch.skipped[0]["reason"]
    assert str(not_image) in batch.skipped[1]["reason"]
    clean = read_images([good, good], to_array, ["a", "d"], unreadable="stop")
    assert np.array_equal(batch.pixels.numpy(), clean.pixels.numpy())
    assert read_images([truncated], to_array, ["b"], unreadable="skip").pixels is None
    with pytest.raises(ValueError, match="unreadable policy"):
        read_images([good], to_array, unreadable="ignore")


def test_image_cache_of_a_truncated_image_names_it_and_leaves_nothing(tiny_clip, damaged_images, tmp_path):
    from clip_interp.negation.caches import write_image_cache

    good, truncated, _ = damaged_images
    path = tmp_path / "cache" / "image.h5"
    with pytest.raises(InputError, match=r"truncated\.jpg \(instance 'k2'\)"):
        write_image_cache(tiny_clip, ["k1", "k2"], [good, truncated], path, model_id="tiny", progress=False)
    assert not path.exists() and not list(path.parent.iterdir())


# --- 5. late validation: checked when the workflow starts -------------------------------------------------


def test_device_problem_names_the_key():
    assert device_problem("auto", False, 0) is None and device_problem("cpu", False, 0) is None
    assert "`device` is 'cuda', but CUDA is not available" in device_problem("cuda", False, 0)
    assert "has 1 CUDA device(s)" in device_problem("cuda:1", True, 1)
    assert device_problem("cuda:0", True, 1) is None


def test_missing_model_files_name_the_key(tmp_path):
    models = {"mine": {"backend": "open_clip", "name": "ViT-B-32", "path": str(tmp_path / "absent.pt")},
              "toy": {"backend": "open_clip", "name": "ToyCLIP", "path": "results/models/toy-clip/toy_clip.pt"}}
    lines = model_path_problems(models, produced=["results/models/toy-clip/toy_clip.pt"])
    assert len(lines) == 1 and lines[0].startswith("`models.mine.path` is ") and "absent.pt" in lines[0]


def test_text_layer_counts_are_read_without_weights(tmp_path):
    assert text_layer_count({"backend": "open_clip", "name": "ViT-B-32"}) == 12
    assert text_layer_count({"backend": "open_clip", "name": "ViT-L-14"}) == 12
    config = tmp_path / "Tiny.json"
    config.write_text(json.dumps({"embed_dim": 8, "text_cfg": {"layers": 2}, "vision_cfg": {"layers": 3}}))
    assert text_layer_count({"backend": "open_clip", "name": "Tiny", "config": str(config)}) == 2
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"text_config": {"num_hidden_layers": 6}}))
    assert text_layer_count({"backend": "hf", "path": str(hf)}) == 6
    assert text_layer_count({"backend": "hf", "name": "openai/clip-vit-base-patch32"}) is None  # a hub id: at run time
    assert text_layer_count({"backend": "open_clip", "name": "Tiny", "config": str(tmp_path / "later.json")}) is None
    models = {"clip": {"backend": "open_clip", "name": "ViT-B-32"}}
    lines = text_layer_problems("negation.selectivity.layer", 99, models)
    assert lines == ["`negation.selectivity.layer` is 99, but the text tower of model `clip` has 12 layers "
                     "(numbered 1..12); choose a layer in 1..12"]
    assert not text_layer_problems("negation.selectivity.layer", 12, models)


def dry_run(workdir: Path, overrides: dict) -> subprocess.CompletedProcess:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            for key, value in values.items():
                if isinstance(value, dict) and isinstance(config[section].get(key), dict):
                    config[section][key].update(value)
                else:
                    config[section][key] = value
        else:
            config[section] = values
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory", str(workdir),
                           "-s", str(REPO / "Snakefile"), "--configfile", str(path)], capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("overrides, expected", [
    ({"negation": {"selectivity": {"layer": 99}}},
     "`negation.selectivity.layer` is 99, but the text tower of model `openai-ViT-B-32` has 12 layers"),
    ({"models": {"openai-ViT-B-32": {"backend": "open_clip", "name": "ViT-B-32", "path": "/no/such/weights.pt"}}},
     "`models.openai-ViT-B-32.path` is '/no/such/weights.pt', which does not exist"),
    ({"negation": {"sources": {"cannot": {"url": "/no/such/cannot.tsv"}}}},
     "`negation.sources.cannot.url` is '/no/such/cannot.tsv', which does not exist"),
], ids=["layer", "model-path", "local-source"])
def test_the_workflow_stops_at_start_naming_the_key(tmp_path, overrides, expected):
    proc = dry_run(tmp_path, overrides)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and expected in out, out[-3000:]
    assert "Job stats" not in out and not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_cuda_device_without_cuda_stops_at_start(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = dry_run(tmp_path, {"device": "cuda"})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "`device` is 'cuda', but CUDA is not available on this machine" in out
    assert "Job stats" not in out and not (tmp_path / "results").exists()


# --- every rule: one line on stderr, the traceback in the log ----------------------------------------------


def test_a_rule_error_is_one_line_with_the_traceback_in_the_log(tmp_path, capfd):
    log = tmp_path / "logs" / "rule.log"
    smk = SimpleNamespace(log=[str(log)], input=[], threads=1)

    def main(smk, logger):
        raise InputError("image file x.jpg (instance 'k1') cannot be read: truncated; replace the file")

    with pytest.raises(SystemExit) as stop:
        run_rule(smk, main)
    assert stop.value.code == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.jpg (instance 'k1') cannot be read" in err[0] and str(log) in err[0]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "InputError" in text
    logging.getLogger("clip_interp").handlers.clear()


# --- reproducibility: PDF and HDF5 bytes ----------------------------------------------------------------


def test_a_pdf_saved_twice_has_the_same_bytes(tmp_path):
    from clip_interp.plotting import new_figure, save_figure

    digests = []
    for name in ("a", "b"):
        time.sleep(1.1 if digests else 0)  # a creation date would differ by a second
        fig, ax = new_figure(1, 1)
        ax.plot([0, 1], [1, 0])
        save_figure(fig, [tmp_path / f"{name}.pdf", tmp_path / f"{name}.png"])
        digests.append((sha(tmp_path / f"{name}.pdf"), sha(tmp_path / f"{name}.png")))
    assert digests[0] == digests[1]
    assert b"CreationDate" not in (tmp_path / "a.pdf").read_bytes()


def test_a_text_cache_written_twice_has_the_same_bytes(tiny_clip, tmp_path):
    from clip_interp.negation.caches import write_text_cache

    ids = [tiny_clip.tokenizer.encode(s) for s in ("There is no dog.", "There are no red circles.")]
    for name in ("a", "b"):
        time.sleep(1.1 if name == "b" else 0)  # a timestamp would differ by a second
        write_text_cache(tiny_clip, ["k1", "k2"], {"negated": ids, "non_negated": ids[::-1]}, tmp_path / f"{name}.h5",
                         model_id="tiny", progress=False, metadata={"variant": "standard", "excluded": []})
    assert sha(tmp_path / "a.h5") == sha(tmp_path / "b.h5")
