"""Per-head neighbours (clip_interp.decomposition.neighbours): dot product (the paper's) against cosine on hand-made
vectors where they rank differently, the long table with both similarities and the overlap of their top-k, a
query image given as a file outside the set on a tiny random-init CLIP, and the config checks of image files
(neighbours and spatial maps) run at start."""

import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from workflow_runs import REPO, deep_merge

from clip_interp.config import config_problems, image_file_problems, image_row_problems, local_decomposition_problems
from clip_interp.contributions import decompose
from clip_interp.decomposition.neighbours import (
    PAPER_SIMILARITY,
    configured_queries,
    file_head_terms,
    head_neighbours,
    head_scores,
    image_query,
    neighbour_table,
    shared_fraction,
)
from clip_interp.decomposition.table import ComponentTable
from clip_interp.demo.toy_clip import DEFAULT_CONFIG
from clip_interp.errors import InputError
from clip_interp.images import load_images

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
WRITTEN = {"results/models/toy-clip/ToyCLIP.json": DEFAULT_CONFIG}


def hand_made_table(vectors) -> ComponentTable:
    """A set of images whose only nonzero term is head (1, 0), one 2-D vector per image."""
    heads = torch.tensor(vectors, dtype=torch.float32).view(-1, 1, 1, 2)
    n = len(vectors)
    zeros = {name: torch.zeros(n, 2) for name in ("embedding", "embedding_term", "ln_bias")}
    return ComponentTable({**zeros, "heads": heads, "attn_bias": torch.zeros(n, 1, 2), "mlps": torch.zeros(n, 1, 2)})


# a large contribution at 45 degrees, a small one along the query, a middling one close to it
VECTORS = [[10.0, 10.0], [1.0, 0.0], [3.0, -1.0], [0.0, 0.0]]
QUERY = torch.tensor([2.0, 0.0])  # not a unit vector: dot is c . q, not rescaled


def test_dot_is_the_plain_dot_product_and_cosine_ranks_otherwise():
    table = hand_made_table(VECTORS)
    assert PAPER_SIMILARITY == "dot"
    dot = head_scores(table, 1, 0, QUERY)
    assert dot.tolist() == [20.0, 2.0, 6.0, 0.0]
    cosine = head_scores(table, 1, 0, QUERY, similarity="cosine")
    torch.testing.assert_close(cosine, torch.tensor([2 ** -0.5, 1.0, 3 / 10 ** 0.5, 0.0], dtype=torch.float64))
    assert head_neighbours(table, 1, 0, QUERY, 3)["row"].tolist() == [0, 2, 1]
    assert head_neighbours(table, 1, 0, QUERY, 3, similarity="cosine")["row"].tolist() == [1, 2, 0]
    # the ranking by dot is the ranking by the projection on the unit query
    unit = head_neighbours(table, 1, 0, F.normalize(QUERY, dim=0), 3)
    assert unit["row"].tolist() == [0, 2, 1] and unit["score"].tolist() == [10.0, 3.0, 1.0]
    batches_only = type("BatchesOnly", (), {"n": table.n, "n_layers": 1, "n_heads": 1, "batches": table.batches})()
    torch.testing.assert_close(head_scores(batches_only, 1, 0, QUERY, batch_size=3), dot)  # a source without `head`
    with pytest.raises(InputError, match="unknown neighbour similarity 'euclid'"):
        head_scores(table, 1, 0, QUERY, similarity="euclid")
    with pytest.raises(InputError, match="at least 1"):
        head_neighbours(table, 1, 0, QUERY, 0)


def test_the_table_holds_both_similarities_and_their_shared_top_k():
    table = hand_made_table(VECTORS)
    queries = configured_queries(table, ["red"], QUERY.view(1, 2), [2])
    assert [(q.name, q.kind, q.row) for q in queries] == [("text: red", "text", None), ("image: row 2", "image", 2)]
    torch.testing.assert_close(queries[1].at(1, 0, table.head(1, 0)), torch.tensor([3.0, -1.0]))
    frame = neighbour_table(table, [(1, 0)], queries, 2, similarity="cosine")
    assert list(frame.columns) == ["layer", "head", "query", "query_kind", "similarity", "rank", "row", "score",
                                   "shared_with_paper", "configured"]
    assert (frame["configured"] == (frame["similarity"] == "cosine")).all()
    text = frame[frame["query"] == "text: red"].set_index(["similarity", "rank"])
    assert text.loc["dot", "row"].tolist() == [0, 2] and text.loc["cosine", "row"].tolist() == [1, 2]
    assert (text.loc["dot", "shared_with_paper"] == 1.0).all()
    assert (text.loc["cosine", "shared_with_paper"] == 0.5).all()
    image = frame[frame["query"] == "image: row 2"]
    assert 2 not in image["row"].tolist()  # an image of the set is left out of its own ranking
    assert shared_fraction([1, 2, 3], [3, 4, 5]) == 1 / 3 and shared_fraction([], []) == 1.0


def test_a_query_image_file_outside_the_set(tiny_clip, tmp_path, one_thread):
    """The file's head terms are decompose(...).heads / ||e||; as a query it is not left out, and the set's copy
    of the same image is its cosine neighbour 1 with cosine 1."""
    path = tmp_path / "query.png"
    g = torch.Generator().manual_seed(4)
    Image.fromarray((torch.rand(70, 64, 3, generator=g) * 255).to(torch.uint8).numpy()).save(path)
    pixels = torch.cat([load_images([path], tiny_clip.preprocess), torch.randn(5, 3, 64, 64, generator=g)])
    parts = decompose(tiny_clip.vision, pixels, convention="uniform")
    norm = parts.embedding.norm(dim=-1)
    store_like = ComponentTable({  # in the store's units: every term divided by ||e||
        name: getattr(parts, name) / norm.view((-1,) + (1,) * (getattr(parts, name).ndim - 1))
        for name in ("embedding", "embedding_term", "heads", "attn_bias", "mlps", "ln_bias")})
    terms = file_head_terms(tiny_clip, [str(path)], "uniform")
    assert terms.shape == (1, tiny_clip.vision.n_layers, tiny_clip.vision.n_heads, parts.embedding.shape[1])
    torch.testing.assert_close(terms[0], store_like.arrays["heads"][0], atol=1e-5, rtol=1e-4)
    queries = configured_queries(store_like, [], None, [str(path), 3], terms)
    assert [(q.name, q.kind, q.row) for q in queries] == [(f"file: {path}", "file", None), ("image: row 3", "image", 3)]
    torch.testing.assert_close(queries[1].at(2, 1, store_like.head(2, 1)), image_query(store_like, 2, 1, 3))
    torch.testing.assert_close(queries[0].at(2, 1, store_like.head(2, 1)), terms[0, 1, 1])
    frame = neighbour_table(store_like, [(2, 1), (3, 0)], queries, 6)
    by_file = frame[(frame["query_kind"] == "file") & (frame["similarity"] == "cosine") & (frame["rank"] == 1)]
    assert by_file["row"].tolist() == [0, 0] and by_file["score"].tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert (frame.groupby(["layer", "head", "query", "similarity"]).size().loc[:, :, f"file: {path}"] == 6).all()
    with pytest.raises(InputError, match="missing"):
        file_head_terms(tiny_clip, [str(tmp_path / "nope.png")], "uniform")


@pytest.fixture
def demo(monkeypatch):
    monkeypatch.chdir(REPO)
    return yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


def test_the_demo_queries_a_file_and_passes_the_checks(demo):
    assert any(isinstance(q, str) for q in demo["decomposition"]["neighbours"]["image_queries"])
    assert any(isinstance(q, str) for q in demo["decomposition"]["spatial_maps"]["images"])
    assert local_decomposition_problems(demo, WRITTEN) == []
    assert config_problems(demo, SCHEMA) == []


@pytest.mark.parametrize("section, key", [("neighbours", "image_queries"), ("spatial_maps", "images")])
def test_missing_or_unreadable_image_files_are_named_at_start(demo, tmp_path, section, key):
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    config = deep_merge(demo, {"decomposition": {section: {key: [0, "no/such/query.png", str(broken)]}}})
    lines = local_decomposition_problems(config, WRITTEN)
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"`decomposition.{section}.{key}` names the image file 'no/such/query.png', which "
                               "does not exist")
    assert lines[1].startswith(f"`decomposition.{section}.{key}` names the image file {str(broken)!r}, which cannot "
                               "be read as an image")
    assert image_file_problems("k", [0, 1]) == []


def test_rows_and_heads_and_similarity_are_checked(demo):
    assert image_row_problems("decomposition.spatial_maps.images", [0, "a.png", 50], 45, "list.parquet") == [
        '`decomposition.spatial_maps.images` is [0, "a.png", 50], but the image list list.parquet has 45 images, '
        "so rows [50] do not exist; allowed are rows 0..44"]
    config = deep_merge(demo, {"decomposition": {"spatial_maps": {"heads": [[4, 0]]}}})
    lines = local_decomposition_problems(config, WRITTEN)
    assert len(lines) == 1 and lines[0].startswith("`decomposition.spatial_maps.heads` is [[4, 0]], but [[4, 0]] name "
                                                   "no head of the image tower of model `toy-clip`")
    config = deep_merge(demo, {"decomposition": {"neighbours": {"similarity": "euclid"}}})
    assert any("decomposition.neighbours.similarity" in line and "euclid" in line
               for line in config_problems(config, SCHEMA))
