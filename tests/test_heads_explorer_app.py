"""The explorer's handlers, without a browser: outputs on a toy results folder, and every error path as a message."""

from pathlib import Path

import numpy as np
import pytest
import tomllib
from heads_results import PROPERTIES, image_set, write_results
from PIL import Image

from clip_interp.errors import InputError
from clip_interp.heads import cli
from clip_interp.heads.explorer import pictures
from clip_interp.heads.explorer.layout import build_app, guarded
from clip_interp.heads.explorer.pictures import DISPLAY_SIZE, THUMBNAIL_SIZE, overlay
from clip_interp.heads.explorer.request_checks import MAP_SCOPES, ExplorerInputError
from clip_interp.heads.explorer.server import serve
from clip_interp.heads.explorer.state import Explorer
from clip_interp.heads.index import HeadIndex
from clip_interp.images import centre_view

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results(tiny_clip, tmp_path_factory, one_thread):
    return write_results(tmp_path_factory.mktemp("explorer"), tiny_clip)


@pytest.fixture(scope="module")
def explorer(results, tiny_clip):
    return Explorer(results, open_index=lambda folder, model: HeadIndex.open(folder, model, loaded_model=tiny_clip))


@pytest.fixture(scope="module")
def query(explorer):
    return explorer.image_from_set("toy", "2: red_square_white")


def test_the_overview_lists_every_analysed_head_with_its_label(explorer, tiny_clip):
    overview = explorer.overview("toy")
    n_layers, n_heads = tiny_clip.vision.n_layers, tiny_clip.vision.n_heads
    assert [value for _, value in overview.head_choices] == [f"{layer}:{head}" for layer in (n_layers - 1, n_layers)
                                                              for head in range(n_heads)]
    assert overview.head_choices[0][0] == f"L{n_layers - 1} H0 (paper L{n_layers - 2}.H0) · colours (67%)"
    assert overview.properties == sorted(PROPERTIES)
    assert overview.image_choices == [f"{i}: {key}" for i, (key, _) in enumerate(image_set())]
    assert overview.scores[["entanglement", "association"]].iloc[0].tolist() == [0.25, 0.5]
    assert len(overview.head_cards) == 2 * n_heads and "12 images in the index" in overview.summary


def test_another_labeller_relabels_the_menu_the_cards_and_the_property_groups(explorer, query, tiny_clip):
    overview = explorer.overview("toy", "llm")
    assert overview.labellers == ["llm", "taxonomy"] and overview.labeller == "llm"
    n_layers = tiny_clip.vision.n_layers
    assert overview.head_choices[0][0] == f"L{n_layers - 1} H0 (paper L{n_layers - 2}.H0) · shapes (67%)"
    assert explorer.head_card("toy", f"{n_layers - 1}:0", "llm").startswith(
        f"### L{n_layers - 1} H0 (paper L{n_layers - 2}.H0): shapes\nLabeller `llm`"
    )
    assert explorer.head_card("toy", f"{n_layers - 1}:0").startswith(
        f"### L{n_layers - 1} H0 (paper L{n_layers - 2}.H0): colours\nLabeller `taxonomy`"
    )
    by_llm = explorer.property_neighbours("toy", query, "shapes", 12, "llm")
    by_taxonomy = explorer.property_neighbours("toy", query, "shapes", 12)
    assert not np.allclose(by_llm.table.sort_values("row")["score"], by_taxonomy.table.sort_values("row")["score"])
    with pytest.raises(ExplorerInputError,
                       match="labeller 'gpt' has no labels for model 'toy'; its labellers: llm, taxonomy"):
        explorer.overview("toy", "gpt")


def test_a_head_card_shows_the_label_and_the_textspan_texts_in_rank_order(explorer, tiny_clip):
    layer = tiny_clip.vision.n_layers
    card = explorer.head_card("toy", f"{layer}:1")
    assert card.startswith(f"### L{layer} H1 (paper L{layer - 1}.H1): ")
    positions = [card.index(f"{rank}. a ") for rank in (1, 2, 3)]
    assert positions == sorted(positions) and "(50.0%)" in card


def test_an_image_of_the_set_is_its_own_nearest_neighbour_for_every_ranking(explorer, query, tiny_clip):
    layer = tiny_clip.vision.n_layers
    by_head = explorer.image_neighbours("toy", query, f"{layer}:0", 5)
    by_property = explorer.property_neighbours("toy", query, "shapes", 4, similarity="cosine")
    for found, k in ((by_head, 5), (by_property, 4)):
        assert found.table["rank"].tolist() == list(range(1, k + 1)) and len(found.gallery) == k
        assert found.table["image"].iloc[0] == "red_square_white"
        assert found.table["score"].iloc[0] == pytest.approx(1.0, abs=1e-5)
        assert found.table["score"].is_monotonic_decreasing
        picture, caption = found.gallery[0]
        assert picture.size == (THUMBNAIL_SIZE,) * 2 and caption == "#1 · 1.000 · red_square_white"


def test_text_neighbours_rank_every_image_when_k_exceeds_the_set(explorer, tiny_clip):
    found = explorer.text_neighbours("toy", "a red circle", f"{tiny_clip.vision.n_layers}:2", 20)
    assert len(found.table) == len(found.gallery) == 12 and sorted(found.table["row"]) == list(range(12))
    assert "12 nearest images to 'a red circle'" in found.summary


def test_an_image_file_gone_since_indexing_keeps_its_rank_and_is_counted(explorer, monkeypatch):
    real = pictures.thumbnail
    monkeypatch.setattr(pictures, "thumbnail", lambda path, *a: None if "red_" in Path(path).name else real(path, *a))
    found = explorer.text_neighbours("toy", "a red circle", "3:2", 12)
    unreadable = [caption for _, caption in found.gallery if caption.endswith(" (file unreadable)")]
    assert len(found.gallery) == 12 and len(unreadable) == 4 and all("· red_" in c for c in unreadable)
    assert found.summary.endswith("(4 of their files cannot be read; see the server log)")


@pytest.mark.parametrize("scope", MAP_SCOPES)
def test_maps_are_drawn_over_the_query_for_each_scope(explorer, query, tiny_clip, scope):
    picture, caption = explorer.topic_map("toy", query, "a red square", f"{tiny_clip.vision.n_layers}:1", scope)
    assert picture.size == (DISPLAY_SIZE, DISPLAY_SIZE) and "'a red square'" in caption
    pair = explorer.contrastive_maps("toy", query, "red", "blue", f"{tiny_clip.vision.n_layers}:1", scope)
    assert [c.split(" (")[0] for _, c in pair] == ["'red' minus 'blue'", "'blue' minus 'red'"]
    assert all(p.size == (DISPLAY_SIZE, DISPLAY_SIZE) for p, _ in pair)


def test_an_overlay_of_zeros_is_the_centre_crop_and_of_ones_the_blend():
    image = Image.new("RGB", (80, 40), (200, 100, 50))
    plain = overlay(image, np.zeros((7, 7)), size=32)
    assert np.array_equal(np.asarray(plain), np.asarray(centre_view(image, 32)))
    full = np.asarray(overlay(image, np.ones((7, 7)), alpha=1.0, size=32))
    from matplotlib import colormaps
    assert np.abs(full[5, 5] - np.round(np.array(colormaps["inferno"](1.0)[:3]) * 255)).max() <= 1


def test_uploads_are_read_and_bad_ones_named(explorer, tmp_path):
    good = tmp_path / "photo.png"
    Image.new("RGB", (30, 20), "blue").save(good)
    assert explorer.upload(str(good)).size == (30, 20)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ExplorerInputError, match="notes.txt is not an image Pillow can read"):
        explorer.upload(str(text))
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(big)
    small_limit = Explorer(explorer.results_dir, max_upload_mb=0.1, open_index=explorer.open_index)
    with pytest.raises(ExplorerInputError, match=r"big.png is 0.\d MB, above the upload limit of 0.1 MB"):
        small_limit.upload(str(big))
    with pytest.raises(ExplorerInputError, match="upload an image"):
        explorer.upload(None)
    with pytest.raises(ExplorerInputError, match="the upload gone.png did not arrive"):
        explorer.upload(str(tmp_path / "gone.png"))


@pytest.mark.parametrize("call, message", [
    (lambda e, q: e.image_neighbours("toy", q, "3:99", 3), "head '3:99' is outside model 'toy': its analysed layers "
                                                            "are 2, 3 and its heads 0..3"),
    (lambda e, q: e.image_neighbours("toy", q, "9:0", 3), "head '9:0' is outside model 'toy'"),
    (lambda e, q: e.head_card("toy", "L3H1"), "head 'L3H1' is not of the form 'layer:head'"),
    (lambda e, q: e.text_neighbours("toy", "x", "", 3), "choose a head first"),
    (lambda e, q: e.overview("ViT-B-32_openai"), "model 'ViT-B-32_openai' has no results: .*explorer.json does not "
                                                   "exist; processed models: toy"),
    (lambda e, q: e.property_neighbours("toy", q, "animals", 3), "no head of the analysed layers of model toy has "
                                                                  "property 'animals' in property set 'taxonomy'"),
    (lambda e, q: e.property_neighbours("toy", q, "shapes", 3, "app"), "property set 'app' does not exist for "
                                                                        "model toy; its property sets: llm, taxonomy"),
    (lambda e, q: e.property_neighbours("toy", q, "shapes", 3, "llm", "l1"), "similarity 'l1' is not one of dot"),
    (lambda e, q: e.property_neighbours("toy", None, "shapes", 3), "no query image"),
    (lambda e, q: e.topic_map("toy", q, "  ", "3:0"), "enter a text"),
    (lambda e, q: e.contrastive_maps("toy", q, "red", "", "3:0"), "enter text B"),
    (lambda e, q: e.topic_map("toy", q, "red", "3:0", "everything"), "map scope 'everything' is not one of"),
    (lambda e, q: e.text_neighbours("toy", "red", "3:0", 0), "between 1 and 50, got 0"),
    (lambda e, q: e.text_neighbours("toy", "red", "3:0", "many"), "must be a whole number, got 'many'"),
    (lambda e, q: e.image_from_set("toy", "40: nothing"),
     r"image row 40 is outside the image set of 'toy' \(rows 0..11\)"),
])
def test_bad_requests_are_one_line_messages(explorer, query, call, message, tiny_clip):
    assert tiny_clip.vision.n_layers == 3 and tiny_clip.vision.n_heads == 4  # the numbers in the messages
    with pytest.raises(ExplorerInputError, match=message) as caught:
        call(explorer, query)
    assert "\n" not in str(caught.value)


def test_a_model_whose_results_are_broken_is_named_and_the_others_still_answer(results, tmp_path, tiny_clip):
    broken = tmp_path / "results"
    (broken / "heads" / "broken").mkdir(parents=True)
    (broken / "heads" / "broken" / "explorer.json").write_text("{not json")
    (broken / "heads" / "toy").symlink_to(results / "heads" / "toy")
    explorer = Explorer(broken, open_index=lambda folder, model: HeadIndex.open(
        folder if model == "broken" else results, model, loaded_model=tiny_clip))
    assert explorer.models == ["broken", "toy"]
    with pytest.raises(ExplorerInputError, match="the results of model 'broken' cannot be read: .*is not valid JSON"):
        explorer.overview("broken")
    assert len(explorer.overview("toy").image_choices) == 12


def test_a_results_folder_without_a_processed_model_is_refused(tmp_path):
    with pytest.raises(ExplorerInputError, match=f"results folder {tmp_path / 'none'} does not exist"):
        Explorer(tmp_path / "none")
    (tmp_path / "heads" / "half").mkdir(parents=True)
    with pytest.raises(ExplorerInputError, match=f"no processed model under {tmp_path}: no .*explorer.json"):
        Explorer(tmp_path)


def test_the_page_turns_errors_into_a_status_line_and_clears_the_outputs():
    pytest.importorskip("gradio")

    def bad_input(x):
        raise InputError(f"value {x} is bad")

    def broken(x):
        raise RuntimeError("boom")

    assert guarded(lambda x: (x, x + 1, "done"), 2)(1) == (1, 2, "done")
    with pytest.warns(UserWarning, match="value 7 is bad"):  # gr.Warning outside a page is a Python warning
        assert guarded(bad_input, 2)(7) == (None, None, "⚠ value 7 is bad")
    with pytest.warns(UserWarning, match="internal error"):
        assert guarded(broken, 1)(7) == (None, "⚠ internal error (RuntimeError: boom); see the server log")


def test_the_page_builds_with_every_analysis(explorer):
    pytest.importorskip("gradio")
    config = build_app(explorer).config
    ids = {c["props"].get("elem_id") for c in config["components"]}
    for name in ("property", "topic", "contrast", "image", "text"):
        assert f"run-{name}" in ids
    assert {"status", "upload", "head", "cards", "scores"} <= ids


def test_the_server_binds_to_the_network_only_when_allowed(results):
    with pytest.raises(ExplorerInputError, match="host '0.0.0.0' would expose the explorer .* --allow-network"):
        serve(results, host="0.0.0.0")


@pytest.mark.parametrize("argv, message", [
    (["--results", "{tmp}/missing"], "results folder {tmp}/missing does not exist"),
    (["--results", "{tmp}"], "no processed model under {tmp}"),
    (["--results", "{results}", "--host", "0.0.0.0"], "--allow-network"),
    (["--results", "{results}", "--port", "70000"], "--port 70000 is not a port number"),
    (["--results", "{results}", "--threads", "0"], "--threads 0 must be at least 1"),
])
def test_the_command_names_bad_arguments_and_exits_2(argv, message, tmp_path, results, capsys):
    values = {"tmp": str(tmp_path), "results": str(results)}
    status = cli.main(["explore", *[a.format(**values) for a in argv]])
    assert status == 2 and message.format(**values) in capsys.readouterr().err


def test_the_console_script_is_declared():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["clip-interp"] == "clip_interp.heads.cli:main"
    with pytest.raises(SystemExit) as exited:
        cli.main(["explore"])
    assert exited.value.code == 2
