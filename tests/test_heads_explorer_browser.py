"""The explorer in a real browser: `clip-interp explore` on a results folder, driven through Debian's Chromium with
Playwright. Uploads an image of the set, runs each of the five analyses, checks what the page shows (label text, maps,
neighbour grids and tables of length k with the query first at cosine 1), uploads a non-image and a too-large file,
checks the messages and that the server still answers, and saves a screenshot per step in the test's temporary folder.
It runs twice: on a results folder the test writes (a random-init tiny model, two labellers) and on the reduced demo's
results (the session's run of the reduced demo of tests/workflow_runs.py). A second test serves one of the paper's six
models (a random-init ViT-B-32 saved to a local file and declared as ViT-B-32 ``openai``, so it has the published
labels and the app's property groups, from the shared data folder): it selects the ``published`` labeller, runs a
property search over an app group with each similarity, and fills the text-neighbour query from a TEXTSPAN text.

Chromium: ``$CLIP_INTERP_CHROMIUM`` or ``/usr/bin/chromium`` (Debian's package; Playwright's own browser download is
not used). Without Playwright or a browser the test skips with the reason; with ``CLIP_INTERP_REQUIRE_BROWSER=1`` (set
by ``.ci/run``) that skip is a failure.
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from heads_results import write_published_results, write_results
from PIL import Image

from clip_interp.heads.explorer.request_checks import CONTRAST_SCOPE
from clip_interp.heads.explorer.state import head_choice_text
from clip_interp.heads.index import read_manifest

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CLIP_INTERP_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("CLIP_INTERP_REQUIRE_BROWSER", "") not in ("", "0")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAX_UPLOAD_MB = 1
K = 8
SLOW = 60_000  # ms for a step that may load the model


def _unavailable(reason: str):
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason}; CLIP_INTERP_REQUIRE_BROWSER is set, so this is an error")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        _unavailable(f"Playwright for Python is not installed ({exc}); pip install playwright")
    if not Path(CHROMIUM).is_file():
        _unavailable(f"no Chromium at {CHROMIUM}; apt-get install chromium (or set CLIP_INTERP_CHROMIUM)")
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        except Error as exc:
            _unavailable(f"Chromium at {CHROMIUM} cannot be launched: {str(exc).splitlines()[0]}")
        yield chromium
        chromium.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Served:
    """A running explorer and what its page should show, read from its results folder."""

    url: str
    log: Path
    model: str
    labeller: str            # the model's default labeller
    other_labeller: str | None
    first_head: str          # the head menu's first entry, e.g. "L2 H0 (paper L1.H0) · colours (67%)"
    first_head_label: str
    n_images: int
    queries: list[tuple[Path, str]]  # two images of the set (path, key)


def describe(results: Path, url: str, log: Path) -> Served:
    """The expectations for the first model under ``results``, from its manifest and tables."""
    manifest_file = sorted(results.glob("heads/*/explorer.json"))[0]
    manifest = read_manifest(manifest_file)
    root = (manifest_file.parent / manifest["root"]).resolve()
    labels = pd.read_parquet(root / manifest["labels"][manifest["default_labeller"]]).sort_values(["layer", "head"])
    first = labels.iloc[0]
    images = pd.read_parquet(root / manifest["images"])
    others = sorted(set(manifest["labels"]) - {manifest["default_labeller"]})
    return Served(url, log, manifest["model"], manifest["default_labeller"], others[0] if others else None,
                  head_choice_text(first["layer"], first["head"], first["label"], first["confidence"]), first["label"],
                  len(images), [(root / images["path"].iloc[i], images["key"].iloc[i]) for i in (0, len(images) - 1)])


@pytest.fixture(scope="module")
def toy_results(tiny_clip, tmp_path_factory) -> Path:
    """A results folder written by the test: 12 coloured shapes, a random-init tiny model, two labellers."""
    return write_results(tmp_path_factory.mktemp("explorer_toy"), tiny_clip)


@pytest.fixture(scope="module")
def demo_results(demo_run) -> Path:
    """The results folder of the session's reduced demo run (tests/workflow_runs.py), the toy CLIP's explorer
    index included."""
    return demo_run.workdir / "results"


@pytest.fixture(scope="module")
def published_results(shared_data, tmp_path_factory) -> Path:
    """A results folder of one of the paper's six models (heads_results.write_published_results): six coloured
    shapes, a random-init ViT-B-32 declared as ViT-B-32 openai, labellers taxonomy, llm and published, the app's
    groups."""
    return write_published_results(tmp_path_factory.mktemp("explorer_published"), shared_data / "clip_interpret")


@pytest.fixture(scope="module", params=["toy", "demo"])
def server(request, tmp_path_factory):
    """``clip-interp explore`` in a subprocess on the toy results or on the reduced demo's results."""
    yield from _serve(request.getfixturevalue(f"{request.param}_results"), tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def published_server(published_results, tmp_path_factory):
    """``clip-interp explore`` in a subprocess on the ViT-B-32 openai results."""
    yield from _serve(published_results, tmp_path_factory, "published")


def _serve(results: Path, tmp_path_factory, name: str):
    """``clip-interp explore`` on ``results`` in a subprocess, yielding what its page should show; stopped after."""
    root = tmp_path_factory.mktemp(f"explorer_server_{name}")
    port = _free_port()
    log = root / "server.log"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(root / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "clip_interp.heads.cli", "explore", "--results", str(results),
                                    "--port", str(port), "--max-upload-mb", str(MAX_UPLOAD_MB)],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_answering(url, process, log)
        yield describe(results, url, log)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_answering(url: str, process, log: Path, timeout: float = 180) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            pytest.fail(f"the explorer exited with status {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the explorer did not answer at {url} within {timeout} s:\n{log.read_text()}")


def _answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status == 200


def test_the_five_analyses_in_a_browser(browser, server, tmp_path):
    from playwright.sync_api import expect

    shots = tmp_path / "screenshots"
    shots.mkdir()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    status = page.locator("#status textarea")
    k = min(K, server.n_images)
    (query, query_key), (second, second_key) = server.queries

    def shoot(name: str) -> None:
        page.screenshot(path=shots / f"{name}.png", full_page=True)

    def thumbnails(gallery: str):
        return page.locator(f"#{gallery} .thumbnail-item")

    def expect_gallery(gallery: str, n: int, first: str | None = None) -> None:
        expect(thumbnails(gallery)).to_have_count(n)
        expect(page.locator(f"#{gallery} .thumbnail-item img")).to_have_count(n)
        if first is not None:
            expect(thumbnails(gallery).first).to_contain_text(first)

    def table_rows(table: str) -> int:  # the grid counts its header row; its body is virtualised
        return int(page.locator(f"#{table} [role=grid]").get_attribute("aria-rowcount")) - 1

    def upload(path: Path) -> None:
        page.locator("#upload input[type=file]").set_input_files(path)
        with Image.open(path) as image:
            width, height = image.size
        expect(status).to_have_value(f"Query: uploaded {path.name} ({width}x{height}).", timeout=SLOW)

    page.goto(server.url)
    expect(status).to_have_value(f"Model {server.model} loaded; labels by {server.labeller}.", timeout=SLOW)
    expect(page.locator("#head input")).to_have_value(server.first_head)
    expect(page.locator("#card")).to_contain_text(re.compile(rf"L\d+ H0 \(paper L\d+\.H0\): {server.first_head_label}"))
    expect(page.locator("#summary")).to_contain_text(f"{server.n_images} images in the index")
    upload(query)
    expect(page.locator("#query img")).to_have_count(1)
    shoot("0_query")

    # (a) property neighbours: the query is an image of the set, so it comes first with cosine 1
    page.get_by_role("tab", name="(a) Property neighbours").click()
    page.locator("#similarity").get_by_label("cosine (what the paper's text says)").check()
    page.locator("#run-property").click()
    expect(status).to_have_value(re.compile(rf"^\(a\) {k} nearest images by the cosine of the mean of the heads of "
                                            rf"'.+' \(property set {server.labeller}\)\.$"), timeout=SLOW)
    expect_gallery("gallery-property", k, f"#1 · 1.000 · {query_key}")
    assert table_rows("table-property") == k
    shoot("a_property_neighbours")

    # (b) topic segmentation: one map drawn over the query
    page.get_by_role("tab", name="(b) Topic segmentation").click()
    page.locator("#topic-text textarea").fill("There is a red circle.")
    page.locator("#run-topic").click()
    expect(status).to_have_value(re.compile(r"^\(b\) map of 'There is a red circle\.' on head L\d+ H0 "
                                            r"\(paper L\d+\.H0\)\.$"), timeout=SLOW)
    expect(page.locator("#image-topic img")).to_have_count(1)
    expect(page.locator("#caption-topic")).to_contain_text("'There is a red circle.' on head")
    shoot("b_topic_segmentation")

    # (c) contrastive segmentation: two maps, each text minus the other, over all heads of the layer
    page.get_by_role("tab", name="(c) Contrastive segmentation").click()
    expect(page.locator("#contrast-scope").get_by_role("radio", name=CONTRAST_SCOPE)).to_be_checked()  # the paper's
    page.locator("#contrast-a textarea").fill("Something red.")
    page.locator("#contrast-b textarea").fill("Something blue.")
    page.locator("#contrast-scope").get_by_label("all heads of its layer").check()
    page.locator("#run-contrast").click()
    expect(status).to_have_value(re.compile(r"^\(c\) 'Something red\.' minus 'Something blue\.' \(all heads of "
                                            r"layer \d+ \(paper layer \d+\)\)"), timeout=SLOW)
    expect_gallery("gallery-contrast", 2, "'Something red.' minus 'Something blue.'")
    expect(thumbnails("gallery-contrast").nth(1)).to_contain_text("'Something blue.' minus 'Something red.'")
    shoot("c_contrastive_segmentation")

    # (d) per-head image neighbours
    page.get_by_role("tab", name="(d) Head image neighbours").click()
    page.locator("#run-image").click()
    expect(status).to_have_value(re.compile(rf"^\(d\) {k} nearest images by head L\d+ H0 \(paper L\d+\.H0\)\.$"),
                                 timeout=SLOW)
    expect_gallery("gallery-image", k, f"#1 · 1.000 · {query_key}")
    assert table_rows("table-image") == k
    shoot("d_head_image_neighbours")

    # (e) per-head text neighbours, with k set to 5
    page.get_by_role("tab", name="(e) Head text neighbours").click()
    k_box = page.locator("#k input[type=number]")
    k_box.fill("5")
    k_box.press("Enter")
    page.locator("#text-text textarea").fill("There is a blue square.")
    page.locator("#run-text").click()
    expect(status).to_have_value(re.compile(r"^\(e\) 5 nearest images to 'There is a blue square\.' by head "
                                            r"L\d+ H0 \(paper L\d+\.H0\)\.$"), timeout=SLOW)
    expect_gallery("gallery-text", 5, "#1 · ")
    assert table_rows("table-text") == 5
    shoot("e_head_text_neighbours")

    # the head cards and scores
    page.get_by_role("tab", name="Head cards and scores").click()
    expect(page.locator("#scores")).to_contain_text("entanglement")
    expect(page.locator("#cards")).to_contain_text(server.first_head_label)
    shoot("f_head_cards_and_scores")

    if server.other_labeller:  # another labeller relabels the head menu and the card
        page.locator("#labeller input").click()
        page.get_by_role("option", name=server.other_labeller).click()
        expect(status).to_have_value(f"Model {server.model} loaded; labels by {server.other_labeller}.", timeout=SLOW)
        expect(page.locator("#head input")).not_to_have_value(server.first_head)
        expect(page.locator("#card")).to_contain_text(f"Labeller {server.other_labeller}")

    # a non-image upload: a message, the query cleared, and the server still answers
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not an image")
    page.locator("#upload input[type=file]").set_input_files(notes)
    expect(status).to_have_value("⚠ notes.txt is not an image Pillow can read; upload a PNG, JPEG, WebP or other "
                                 "image file", timeout=SLOW)
    expect(page.locator("#query img")).to_have_count(0)
    shoot("g_non_image_upload")
    page.get_by_role("tab", name="(d) Head image neighbours").click()
    page.locator("#run-image").click()
    expect(status).to_have_value(re.compile("no query image"), timeout=SLOW)
    expect(thumbnails("gallery-image")).to_have_count(0)

    # a file above --max-upload-mb: refused, and the page keeps working with a good upload afterwards
    large = tmp_path / "large.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (800, 800, 3), dtype=np.uint8)).save(large)
    assert large.stat().st_size > MAX_UPLOAD_MB * 2**20
    page.locator("#upload input[type=file]").set_input_files(large)
    refusal = page.locator("[data-testid=toast-text]", has_text="exceed the maximum allowed size of 1.0 Mb")
    expect(refusal).to_contain_text('"large.png"', timeout=SLOW)  # Gradio refuses it before our handler runs
    refusal.scroll_into_view_if_needed()
    shoot("h_too_large_upload")
    assert _answers(server.url)
    upload(second)
    page.locator("#run-image").click()
    expect(status).to_have_value(re.compile(r"^\(d\) 5 nearest images"), timeout=SLOW)  # k is still 5
    expect_gallery("gallery-image", 5, f"#1 · 1.000 · {second_key}")

    assert "Traceback" not in server.log.read_text()
    names = sorted(p.name for p in shots.glob("*.png"))
    assert names == ["0_query.png", "a_property_neighbours.png", "b_topic_segmentation.png",
                     "c_contrastive_segmentation.png", "d_head_image_neighbours.png", "e_head_text_neighbours.png",
                     "f_head_cards_and_scores.png", "g_non_image_upload.png", "h_too_large_upload.png"]
    print(f"screenshots in {shots}")
    page.close()


def test_published_labels_app_groups_and_textspan_texts_in_a_browser(browser, published_server, tmp_path):
    """One of the paper's six models: the ``published`` labeller relabels the head menu (both numberings, no
    confidence), an app property group is searched with the dot product (the app's, the default) and with the
    cosine, and a TEXTSPAN text of the chosen head fills the text-neighbour query in one click."""
    from playwright.sync_api import expect

    server = published_server
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    status = page.locator("#status textarea")
    k = min(K, server.n_images)
    query, query_key = server.queries[0]
    page.goto(server.url)
    expect(status).to_have_value(f"Model {server.model} loaded; labels by {server.labeller}.", timeout=SLOW)

    # the published labeller: the paper's label of L9 H0 (paper L8.H0) of ViT-B-32 openai, without a confidence
    page.locator("#labeller input").click()
    page.get_by_role("option", name="published").click()
    expect(status).to_have_value(f"Model {server.model} loaded; labels by published.", timeout=SLOW)
    expect(page.locator("#head input")).to_have_value("L9 H0 (paper L8.H0) · Emotion")
    expect(page.locator("#card")).to_contain_text("L9 H0 (paper L8.H0): Emotion")
    page.locator("#upload input[type=file]").set_input_files(query)
    expect(status).to_have_value(re.compile(rf"^Query: uploaded {query.name} "), timeout=SLOW)
    page.screenshot(path=shots / "0_published_labels.png", full_page=True)

    # an app property group, searched with each similarity; the app's groups are the default property set
    page.get_by_role("tab", name="(a) Property neighbours").click()
    expect(page.locator("#property-set input")).to_have_value("the CLIP-InterpreT app's hand-curated groups (app)")
    page.locator("#property input").click()
    page.get_by_role("option", name="pattern", exact=True).click()
    expect(page.locator("#similarity").get_by_role("radio", name=re.compile("^dot product"))).to_be_checked()
    page.locator("#run-property").click()
    expect(status).to_have_value(f"(a) {k} nearest images by the dot of the mean of the heads of 'pattern' "
                                 "(property set app).", timeout=SLOW)
    expect(page.locator("#gallery-property .thumbnail-item")).to_have_count(k)
    page.screenshot(path=shots / "a_app_group_dot.png", full_page=True)
    page.locator("#similarity").get_by_label("cosine (what the paper's text says)").check()
    page.locator("#run-property").click()
    expect(status).to_have_value(f"(a) {k} nearest images by the cosine of the mean of the heads of 'pattern' "
                                 "(property set app).", timeout=SLOW)
    expect(page.locator("#gallery-property .thumbnail-item").first).to_contain_text(f"#1 · 1.000 · {query_key}")
    page.screenshot(path=shots / "a_app_group_cosine.png", full_page=True)

    # the chosen head's top TEXTSPAN texts: one click fills the query, which then runs
    page.get_by_role("tab", name="(e) Head text neighbours").click()
    first_text = "a shapes text 0 of L9 H0"  # heads_results.textspan_table: rank 1 of L9 H0
    page.locator("#textspan-texts").get_by_text(first_text, exact=True).click()
    expect(page.locator("#text-text textarea")).to_have_value(first_text, timeout=SLOW)
    page.locator("#run-text").click()
    expect(status).to_have_value(f"(e) {k} nearest images to '{first_text}' by head L9 H0 (paper L8.H0).",
                                 timeout=SLOW)
    expect(page.locator("#gallery-text .thumbnail-item")).to_have_count(k)
    page.screenshot(path=shots / "e_textspan_text.png", full_page=True)
    assert "Traceback" not in server.log.read_text()
    print(f"screenshots in {shots}")
    page.close()
