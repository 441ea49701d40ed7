"""The decomposition study's workflow steps on small inputs: the demo's synthetic sets in the real formats, the
image lists, sharded stores equal to one store, the tables and figures of the rules, head lists and the config."""

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_core_config import SCHEMA, load

from clip_interp.config import PAPER_HEADS_FILE, config_problems
from clip_interp.decomposition import steps
from clip_interp.decomposition.classifier import ablation_accuracies, predict, zero_shot_classifier
from clip_interp.decomposition.data import (
    ImageNetSegmentation,
    extract_waterbirds,
    read_description_pool,
    read_waterbirds,
    waterbirds_root,
)
from clip_interp.decomposition.spurious import select_heads_by_descriptions, select_heads_from_table
from clip_interp.decomposition.store import DecompositionStore, gather_shards, n_shards, shard_rows, write_decomposition
from clip_interp.decomposition.textspan import textspan_heads, textspan_table
from clip_interp.demo.decomposition_sets import (
    CLASSES,
    PLACES,
    WATERBIRD_SHAPES,
    description_pool,
    generate_decomposition_sets,
)
from clip_interp.demo.negation_benchmark import COLOURS
from clip_interp.errors import InputError


def _generate(root, **overrides):
    arguments = dict(n_classification=20, n_waterbirds_train=40, n_waterbirds_test=8, spurious_correlation=0.9)
    arguments.update(overrides)
    (root / "images").mkdir(parents=True, exist_ok=True)
    return generate_decomposition_sets(root / "dec", root / "images", **arguments)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    summary, records = _generate(root)
    return root / "dec", summary, records


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_synthetic_sets_are_read_by_the_real_readers(sets):
    root, summary, _ = sets
    table, excluded = steps.classification_list(root / "classification", root / "classification_labels.txt",
                                                root / "class_names.txt")
    assert len(table) == 20 and excluded == []
    assert table["label"].tolist() == [i % len(CLASSES) for i in range(20)]
    segmentation = ImageNetSegmentation(root / "segmentation.mat")
    image, mask = segmentation.item(5)
    assert len(segmentation) == 20 and image.shape == (64, 84, 3) and mask.dtype == bool
    # the mask marks the object's pixels, whose colour is the class's colour; the centre 64 x 64 is the
    # classification image, the margins on each side are background
    colour = np.asarray(COLOURS[CLASSES[5][0]], dtype=float)
    assert 0 < mask.mean() < 0.5 and not mask[:, :10].any() and not mask[:, -10:].any()
    assert np.abs(image[mask].mean(0) - colour).max() < 25
    from PIL import Image
    classification_image = np.asarray(Image.open(root / "classification" / "cls_00005.png"))
    assert np.array_equal(image[:, 10:74], classification_image)
    segmentation.close()
    water = read_waterbirds(root / "waterbirds")
    assert len(water) == 8
    assert sorted(zip(water["y"], water["place"])) == sorted([(y, p) for y in (0, 1) for p in (0, 1)] * 2)
    assert read_description_pool(root / "descriptions.txt").texts == description_pool()
    assert summary["classes"] == len(CLASSES)


def test_waterbirds_training_pairs_tie_the_background_to_the_class(sets):
    _, summary, records = sets
    shown = [r for r in records if not r["caption_negated"]]
    assert len(shown) == 40 and len(records) == 80
    matching = sum(r["place"] == PLACES[WATERBIRD_SHAPES.index(r["subject"]["shape"])] for r in shown)
    assert matching == summary["waterbirds_train_background_matching_class"]
    assert 0.75 * 40 <= matching < 40  # p = 0.9: mostly matching, not always
    assert all(r["caption"].startswith("There is") and "land" not in r["caption"] for r in records)


def test_synthetic_sets_are_byte_stable(tmp_path, sets):
    _generate(tmp_path)
    assert _digest(tmp_path / "dec") == _digest(sets[0])


@pytest.mark.parametrize("bad, message", [({"n_waterbirds_test": 6}, "multiple of 4"),
                                          ({"spurious_correlation": 0.3}, "spurious_correlation")])
def test_synthetic_sets_refuse_bad_arguments(tmp_path, bad, message):
    with pytest.raises(InputError, match=message):
        _generate(tmp_path, **bad)


@pytest.fixture(scope="module")
def stores(tiny_clip, sets, tmp_path_factory, one_thread):
    """The classification set written in shards of 7 (3 shards) and gathered, and as one store."""
    root = sets[0]
    table, _ = steps.classification_list(root / "classification", root / "classification_labels.txt",
                                         root / "class_names.txt")
    out = tmp_path_factory.mktemp("stores")
    parts = []
    assert n_shards(len(table), 7) == 3
    for shard in range(3):
        rows = table.iloc[shard_rows(len(table), 7, shard)]
        parts.append(out / f"shard_{shard:05d}.h5")
        write_decomposition(tiny_clip, rows["path"].tolist(), rows["key"].tolist(), parts[-1], model_id="tiny",
                            dtype="float32", batch_size=4, labels=rows["label"].tolist())
    gather_shards(parts, out / "gathered.h5")
    write_decomposition(tiny_clip, table["path"].tolist(), table["key"].tolist(), out / "whole.h5", model_id="tiny",
                        dtype="float32", batch_size=4, labels=table["label"].tolist())
    return DecompositionStore(out / "gathered.h5"), DecompositionStore(out / "whole.h5"), table


def test_gathered_shards_equal_one_store(stores):
    gathered, whole, table = stores
    assert gathered.keys == whole.keys == table["key"].tolist()
    assert np.array_equal(gathered.labels, whole.labels)
    for (_, a), (_, b) in zip(gathered.batches(8), whole.batches(8)):
        for name in a:
            assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_zero_shot_table_of_the_rule(tiny_clip, stores, sets, one_thread):
    gathered, _, table = stores
    names, templates = steps.class_names_and_templates(sets[0] / "class_names.txt", sets[0] / "templates.txt")
    classifier = zero_shot_classifier(tiny_clip, names, templates)
    ablations = steps.ablation_set(gathered.n_layers, gathered.n_heads, paper_rows=True)
    assert [a.name for a in ablations] == ["none", "attention_layers_1_1", "attention_layers_1_2",
                                           "attention_layers_1_3", "mlp_group", "class_attention",
                                           "mlp_group_and_class_attention", "everything"]
    result = ablation_accuracies(gathered, classifier, gathered.labels, ablations)
    direct = [predict(terms["embedding"], classifier) for _, terms in gathered.batches(64)][0]
    assert result["accuracy"].iloc[0] == pytest.approx(float((direct.numpy() == gathered.labels).mean()))
    assert [steps.layers_ablated(n) for n in result["ablation"]] == [0, 1, 2, 3, None, None, None, None]


def test_automatic_heads_from_the_textspan_table_match_the_library(tiny_clip, stores, one_thread):
    gathered, _, _ = stores
    texts = steps.encode_pool(tiny_clip, description_pool(), 64)
    spans = textspan_heads(gathered, texts, [2, 3], 3, 8)
    table = textspan_table(spans, description_pool())
    places = steps.encode_pool(tiny_clip, ["A water background.", "A land background."], 64)
    expected = select_heads_by_descriptions(spans, texts, places, 3)
    assert select_heads_from_table(table, texts, places, 3).equals(expected)
    table["head_variance"] = [spans[(layer, h)].total_variance for layer, h in zip(table["layer"], table["head"])]
    best = steps.auto_neighbour_heads(table)
    assert [layer for layer, _ in best] == [2, 3]
    for layer, head in best:
        assert spans[(layer, head)].total_variance == max(spans[(layer, h)].total_variance
                                                          for h in range(gathered.n_heads))


def test_configured_heads_count_layers_from_the_end():
    assert steps.resolve_heads([[-1, 0], [2, 3], [-3, 1]], 3, 4, "key") == [(3, 0), (2, 3), (1, 1)]
    with pytest.raises(InputError, match="`decomposition.spurious.heads` names head \\[4, 0\\]"):
        steps.resolve_heads([[4, 0]], 3, 4, "decomposition.spurious.heads")
    with pytest.raises(InputError, match="heads 0..3"):
        steps.resolve_heads([[1, 4]], 3, 4, "key")


def test_figures_of_the_rules_are_written(tmp_path, sets):
    from clip_interp.decomposition import figures

    table = pd.DataFrame({"ablation": ["none", "attention_layers_1_1", "everything"], "accuracy": [0.9, 0.5, 0.1],
                          "attention_layers_ablated": [0, 1, None]})
    figures.accuracy_vs_ablated_layers(table, [tmp_path / "a.png"], "t")
    spans = pd.DataFrame({"layer": [3, 3], "head": [0, 1], "rank": [1, 1], "text": ["x", "y"], "share": [0.5, 0.2]})
    figures.head_cards(spans, [tmp_path / "b.png"], 2, "t")
    groups = pd.DataFrame([{"condition": c, "ablation_mode": m, "configured": m == "paper", "n_heads_ablated": n,
                            "kept_layers": 2, **{g: 0.5 for g in figures.GROUP_COLUMNS}}
                           for c, m, n in (("baseline", "none", 0), ("ablated", "paper", 2),
                                           ("ablated", "heads_only", 2))])
    figures.waterbirds_groups(groups, ["circle", "triangle"], [tmp_path / "c.png"], "t", 3)
    assert all((tmp_path / f"{n}.png").stat().st_size > 1000 for n in "abc")


def test_waterbirds_tarball_is_extracted_and_a_bad_archive_named(tmp_path, sets):
    archive = tmp_path / "waterbirds.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(sets[0] / "waterbirds", arcname="waterbird_complete95_forest2water2")
    root = extract_waterbirds(archive, tmp_path / "extracted")
    assert root == tmp_path / "extracted" / "waterbird_complete95_forest2water2"
    assert waterbirds_root(tmp_path / "extracted") == root
    table, excluded = steps.waterbirds_list(root, "test")
    assert len(table) == 8 and excluded == [] and set(table.columns) == {"key", "path", "label", "place"}
    (tmp_path / "bad.tar.gz").write_text("not a tarball")
    with pytest.raises(InputError, match="bad.tar.gz is not a readable tar archive"):
        extract_waterbirds(tmp_path / "bad.tar.gz", tmp_path / "extracted2")
    assert not (tmp_path / "extracted2").exists()


def test_an_unreadable_waterbirds_image_is_counted_and_skipped(tmp_path, sets):
    import shutil

    shutil.copytree(sets[0] / "waterbirds", tmp_path / "wb")
    (tmp_path / "wb" / "images" / "wb_test_00003.png").write_bytes(b"broken")
    table, excluded = steps.waterbirds_list(tmp_path / "wb", "test")
    assert len(table) == 7 and excluded[0]["count"] == 1 and "wb_test_00003.png" in excluded[0]["keys"][0]


def test_config_decomposition_section(tmp_path):
    demo = load("demo.yaml")
    assert demo["studies"] == ["negation", "decomposition", "heads"] and config_problems(demo, SCHEMA) == []
    missing = {k: v for k, v in demo.items() if k != "decomposition"}
    assert any("`decomposition` is missing" in line for line in config_problems(missing, SCHEMA))
    bad = yaml.safe_load(yaml.safe_dump(demo))
    bad["decomposition"]["spurious"]["templates"] = ["no placeholder"]
    bad["decomposition"]["neighbours"]["heads"] = [[0, 1]]
    bad["decomposition"]["dtype"] = "float64"
    problems = "\n".join(config_problems(bad, SCHEMA))
    assert "`decomposition.spurious.templates[0]` is 'no placeholder'; it must match" in problems
    assert "decomposition.neighbours.heads" in problems
    assert "`decomposition.dtype` is 'float64'" in problems


def test_the_waterbirds_templates_default_to_openais_80():
    from clip_interp.decomposition.classifier import fill_template, prompt_templates

    schema = yaml.safe_load(SCHEMA.read_text())["$defs"]["decomposition"]["properties"]["spurious"]["properties"]
    assert schema["templates"]["default"] == "openai_imagenet" and schema["ablation"]["default"] == "paper"
    templates = prompt_templates("openai_imagenet")
    prompts = [fill_template(t, "waterbird") for t in templates]
    assert len(templates) == 80 and len(set(prompts)) == 80 and all("waterbird" in p for p in prompts)
    assert prompts[0] == "a bad photo of a waterbird."
    assert prompt_templates(["a {}."]) == ["a {}."]
    with pytest.raises(InputError, match="give 'openai_imagenet' or a list"):
        prompt_templates("imagenet")


def test_the_waterbirds_heads_tables_record_who_chose_them_in_both_numberings(tmp_path):
    from clip_interp.decomposition.spurious import HEADS_COLUMNS, listed_heads, paper_heads
    from clip_interp.head_selection import read_published_heads

    published = read_published_heads(Path(__file__).resolve().parents[1] / PAPER_HEADS_FILE)
    spec = {"backend": "open_clip", "name": "ViT-L-14", "pretrained": "laion2b_s32b_b82k"}
    table = paper_heads(published, "laion", spec, 24, 16)
    assert list(table.columns) == list(HEADS_COLUMNS) and len(table) == 15 and (table["selected_by"] == "paper").all()
    assert (table["paper_layer"] == table["layer"] - 1).all()
    shared = table[(table["layer"] == 23) & (table["head"] == 12)]
    assert shared["property"].tolist() == ["geography, setting"]  # the paper's (22, 12), in both of its lists
    with pytest.raises(InputError, match="model `openai` has none"):
        paper_heads(published, "openai", {**spec, "pretrained": "openai"}, 24, 16)
    with pytest.raises(InputError, match="not in the image tower of model `small`"):
        paper_heads(published, "small", spec, 12, 12)
    listed = listed_heads([(3, 1), (2, 0)])
    assert listed["selected_by"].tolist() == ["config"] * 2 and listed["paper_layer"].tolist() == [2, 1]


def test_gathered_store_moves_with_its_shards_and_is_byte_stable(stores, tmp_path):
    import shutil
    import time

    gathered, _, _ = stores
    folder = gathered.path.parent
    moved = shutil.copytree(folder, tmp_path / "elsewhere")
    copy = DecompositionStore(moved / "gathered.h5")
    assert copy.keys == gathered.keys and str(folder) not in (moved / "gathered.h5").read_bytes().decode("latin-1")
    for (_, a), (_, b) in zip(copy.batches(32), gathered.batches(32)):
        assert torch.equal(a["heads"], b["heads"])
    time.sleep(1.1)
    parts = sorted(moved.glob("shard_*.h5"))
    gather_shards(parts, moved / "again.h5")
    assert (moved / "again.h5").read_bytes() == (moved / "gathered.h5").read_bytes()


def test_every_pool_description_has_one_kind():
    from clip_interp.demo.decomposition_sets import description_kind

    kinds = [description_kind(text) for text in description_pool()]
    counts = {kind: kinds.count(kind) for kind in set(kinds)}
    assert counts == {"colour": 10, "shape": 6, "position": 5, "size": 4, "background": 8, "general": 32}


def test_the_waterbirds_extraction_runs_without_torch():
    """extract_waterbirds runs in the data environment (envs/data.yaml has no torch)."""
    import subprocess
    import sys

    code = "import sys; import clip_interp.decomposition.data; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_planted_structure_checks_on_hand_made_tables():
    from clip_interp.demo.decomposition_sets import planted_structure_checks

    textspan = pd.DataFrame({"layer": [3, 3, 3, 3], "head": [0, 0, 1, 1], "rank": [1, 2, 1, 2],
                             "text": ["Something red.", "A photo of a dog.", "There is a circle.", "Something blue."],
                             "share": [0.5, 0.1, 0.2, 0.3]})
    segmentation = pd.DataFrame({"method": ["decomposition", "last_layer_attention"], "miou": [0.6, 0.4]})
    waterbirds = pd.DataFrame({"condition": ["baseline", "ablated", "ablated"],
                               "ablation_mode": ["none", "paper", "heads_only"], "worst_group": [0.5, 0.5, 0.4],
                               "average": [0.7, 0.7, 0.6]})
    checks = planted_structure_checks(textspan, segmentation, waterbirds)
    assert checks["holds"].tolist() == [False, True, False, False]  # both heads mostly colour (1: colour 0.3 > 0.2)
    assert checks["check"].iloc[2] == "mean-ablating the background heads (paper) raises the worst-group accuracy"
    textspan.loc[3, "share"] = 0.1
    waterbirds.loc[1, "worst_group"] = 0.6
    checks = planted_structure_checks(textspan, segmentation, waterbirds)
    assert checks["holds"].tolist() == [True, True, True, False]
    assert checks["evidence"].iloc[3] == "worst group 0.500 -> 0.400, average 0.700 -> 0.600"


def test_example_images_share_the_masks_geometry():
    from clip_interp.decomposition.segmentation import aligned_mask, display_image

    image = np.zeros((40, 100, 3), dtype=np.uint8)
    image[10:30, 45:55] = 255
    mask = image[..., 0] > 0
    shown, cropped = display_image(image, 32), aligned_mask(mask, 32)
    assert shown.shape == (32, 32, 3) and cropped.shape == (32, 32)
    assert np.abs((shown[..., 0] > 0.5) ^ cropped).sum() <= 8  # the same square, up to resampling at its edges
