"""The explorer over memory-mapped index files (as the workflow writes them): the same answers as the index read
into memory, errors for files that disagree with the manifest, and models opened when chosen and released when
another is chosen with ``release_unused``."""

import gc
import json
import os
import shutil
import weakref

import numpy as np
import pytest
from heads_results import write_results
from PIL import Image

from clip_interp.heads import analyses, cli
from clip_interp.heads.explorer.request_checks import ExplorerInputError
from clip_interp.heads.explorer.state import Explorer
from clip_interp.heads.index import HeadIndex, manifest_path
from clip_interp.heads.steps import write_explorer_index
from clip_interp.heads.vectors import INDEX_FILES


def _index_the_model(results, model: str) -> None:
    """Write the model's index files beside its manifest (paths relative to the working directory, the manifest's
    root, as the workflow does) and record them in the manifest."""
    manifest_file = manifest_path(results, model)
    manifest = json.loads(manifest_file.read_text())
    root = (manifest_file.parent / manifest["root"]).resolve()
    folder = manifest_file.parent.relative_to(root)
    here = os.getcwd()
    os.chdir(root)
    try:
        paths = {name: str(folder / file) for name, (file, _) in INDEX_FILES.items()}
        manifest["index"] = write_explorer_index(manifest["store"], manifest["layers"], paths,
                                                 list(manifest["labels"].values()))
    finally:
        os.chdir(here)
    manifest_file.write_text(json.dumps(manifest, indent=1))


@pytest.fixture(scope="module")
def results(tiny_clip, tmp_path_factory, one_thread):
    results = write_results(tmp_path_factory.mktemp("explorer_memory"), tiny_clip)
    shutil.copytree(results / "heads" / "toy", results / "heads" / "toy2")
    for model in ("toy", "toy2"):
        _index_the_model(results, model)
    return results


@pytest.fixture(scope="module")
def in_memory(results, tiny_clip, tmp_path_factory):
    manifest = json.loads(manifest_path(results, "toy").read_text())
    del manifest["index"]
    copy = tmp_path_factory.mktemp("in_memory") / "explorer.json"
    copy.write_text(json.dumps({**manifest, "root": str(manifest_path(results, "toy").parent / manifest["root"])}))
    return HeadIndex.from_manifest(copy, loaded_model=tiny_clip)


def test_the_mapped_index_answers_as_the_index_in_memory(results, in_memory, tiny_clip):
    mapped = HeadIndex.open(results, "toy", loaded_model=tiny_clip)
    assert mapped.vectors.search.dtype == np.float16 and set(mapped.vectors.mapped) == {"search", "exact",
                                                                                             "group_search"}
    assert in_memory.vectors.mapped == {} and in_memory.vectors.search.dtype == np.float32
    colours = [(mapped.layer_column(layer), head) for layer, head in analyses.property_heads(mapped, "colours")]
    assert colours in [list(group) for group in mapped.vectors.groups]          # its sum is in the group file
    assert len(mapped.vectors.groups) == 3          # 3 properties; the llm labeller's groups are the same head sets
    np.testing.assert_array_equal(mapped.contributions, in_memory.contributions)
    picture = Image.open(mapped.images["path"][5])
    layer = mapped.layers[-1]
    for call in (lambda index: analyses.property_neighbours(index, picture, "colours", 5),
                 lambda index: analyses.head_image_neighbours(index, picture, layer, 1, 4),
                 lambda index: analyses.head_text_neighbours(index, "a red circle", layer, 2, 12)):
        found, expected = call(mapped), call(in_memory)
        assert found["row"].tolist() == expected["row"].tolist()
        np.testing.assert_array_equal(found["score"], expected["score"])
    assert analyses.head_image_neighbours(mapped, picture, layer, 1, 1)["row"].tolist() == [5]


def test_top_k_offers_dot_and_cosine_over_a_group(results, tiny_clip):
    index = HeadIndex.open(results, "toy", loaded_model=tiny_clip)
    layer = index.layers[0]
    heads = [(layer, 0), (index.layers[1], 3)]
    summed = sum(index.head_matrix(*head).double() for head in heads).numpy()
    query = summed[7].astype(np.float32)
    exact_query = query.astype(np.float64)
    for similarity, scores in (("dot", summed @ exact_query),
                               ("cosine", summed @ exact_query / np.linalg.norm(summed, axis=1)
                                / np.linalg.norm(exact_query))):
        rows, found = index.top_k(heads, query, 6, similarity)
        assert rows.tolist() == np.argsort(-scores, kind="stable")[:6].tolist()
        np.testing.assert_allclose(found, scores[rows], rtol=1e-12)
    with pytest.raises(Exception, match="similarity 'l2' is not one of cosine, dot"):
        index.top_k(heads, query, 3, "l2")


def test_a_file_that_disagrees_with_the_manifest_is_named_with_the_rebuild(results, tiny_clip, tmp_path):
    broken = tmp_path / "results"
    shutil.copytree(results / "heads" / "toy", broken / "heads" / "toy")
    manifest_file = manifest_path(broken, "toy")
    manifest = json.loads(manifest_file.read_text())
    manifest["root"] = str((manifest_path(results, "toy").parent / manifest["root"]).resolve())
    manifest["index"]["files"]["exact"]["shape"][2] += 1
    manifest_file.write_text(json.dumps(manifest))
    explorer = Explorer(broken, open_index=lambda folder, model: HeadIndex.open(folder, model, loaded_model=tiny_clip))
    with pytest.raises(ExplorerInputError, match="the results of model 'toy' cannot be read: head index file "
                                                 ".*explorer_index.f32.npy holds float32 .* rebuild them: "
                                                 ".*results/heads/toy/explorer.json"):
        explorer.overview("toy")


def _counting_explorer(results, tiny_clip, **options):
    opened = []

    def open_index(folder, model):
        opened.append(model)
        return HeadIndex.open(folder, model, loaded_model=tiny_clip)

    return Explorer(results, open_index=open_index, **options), opened


def test_a_model_is_opened_when_chosen_and_kept_by_default(results, tiny_clip):
    explorer, opened = _counting_explorer(results, tiny_clip)
    assert explorer.models == ["toy", "toy2"] and opened == [] and explorer.open_models() == []
    explorer.overview("toy")
    explorer.head_card("toy", f"{explorer.index('toy').layers[0]}:1")
    assert opened == ["toy"]
    explorer.overview("toy2")
    assert opened == ["toy", "toy2"] and explorer.open_models() == ["toy", "toy2"]


def test_release_unused_releases_the_other_models_when_another_is_chosen(results, tiny_clip):
    explorer, opened = _counting_explorer(results, tiny_clip, release_unused=True)
    explorer.overview("toy")
    first = weakref.ref(explorer.index("toy"))
    explorer.text_neighbours("toy", "a red circle", f"{first().layers[-1]}:0", 3)
    explorer.overview("toy2")
    gc.collect()
    assert explorer.open_models() == ["toy2"] and first() is None       # released: nothing refers to it
    again = explorer.text_neighbours("toy", "a red circle", f"{explorer.index('toy').layers[-1]}:0", 3)
    assert opened == ["toy", "toy2", "toy"] and explorer.open_models() == ["toy"] and len(again.table) == 3


def test_the_command_line_flag_reaches_the_explorer(results, monkeypatch):
    args = cli.parser().parse_args(["explore", "--results", str(results), "--release-unused"])
    assert args.release_unused is True
    assert cli.parser().parse_args(["explore", "--results", str(results)]).release_unused is False
    served = {}
    monkeypatch.setattr(cli, "serve", lambda *a, **kw: served.update(kw))
    cli.explore(args)
    assert served["release_unused"] is True


def test_the_analyses_of_one_query_image_run_the_model_once(results, tiny_clip, monkeypatch):
    index = HeadIndex.open(results, "toy", loaded_model=tiny_clip)
    calls = []
    real = analyses.decompose
    monkeypatch.setattr(analyses, "decompose", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    layer = index.layers[-1]
    pictures = [Image.open(path) for path in index.images["path"][:analyses.QUERY_CACHE_SIZE + 1]]
    first = analyses.head_image_neighbours(index, pictures[0], layer, 1, 3)
    analyses.property_neighbours(index, pictures[0], "colours", 3)
    assert len(calls) == 1
    for picture in pictures[1:]:
        analyses.head_image_neighbours(index, picture, layer, 1, 3)
    assert len(calls) == len(pictures)
    again = analyses.head_image_neighbours(index, pictures[0], layer, 1, 3)   # evicted: the oldest of 9 > 8 kept
    assert len(calls) == len(pictures) + 1 and again.equals(first)
    assert sum(key[0] == "query" for key in index._cache) == analyses.QUERY_CACHE_SIZE
