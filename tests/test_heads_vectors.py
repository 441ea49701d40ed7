"""The head index's files (float16 search copy, float32 exact copy, norms) and the candidate search with exact
re-scoring: it must equal the exact search over every row, rank for rank, ties included."""

import json

import numpy as np
import pytest

from clip_interp.errors import InputError
from clip_interp.heads.vectors import (
    INDEX_FILES,
    HeadVectors,
    describe,
    open_index_files,
    write_index_files,
)

N, LAYERS, HEADS, WIDTH = 700, 2, 3, 24


def _contributions(seed: int = 0, n: int = N) -> np.ndarray:
    """(N, L_a, H, E) float32 with a spread of scales (some tiny: float16 subnormals), near ties and zero rows."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((n, LAYERS, HEADS, WIDTH)).astype(np.float32)
    values *= np.exp(rng.uniform(-12, 1, size=(n, 1, 1, 1))).astype(np.float32)  # scales 6e-6 .. 2.7
    values[10] = values[3]                                                         # exact duplicates
    values[11] = values[3] * np.float32(1 + 2 ** -20)                            # same direction, near tie
    values[12] = values[3] + np.float32(1e-7) * values[5]                        # a near tie
    noise = rng.standard_normal((40, LAYERS, HEADS, WIDTH)).astype(np.float32)
    values[30:70] = values[3] * (1 + np.float32(3e-4) * noise)[:n - 30]  # closer than float16 resolves: scrambled
    values[20] = 0.0                                                               # zero rows
    values[21, 0, 1] = 0.0
    return values


GROUPS = [[(0, 0)], [(1, 2)], [(0, 1), (1, 0), (1, 2)], [(a, h) for a in range(LAYERS) for h in range(HEADS)],
          [(0, 2), (1, 1)]]
LISTED = GROUPS[2:4]  # groups whose sums the files hold; GROUPS[4] is summed head by head


def _write(tmp_path, values: np.ndarray) -> dict:
    paths = {name: tmp_path / file for name, (file, _) in INDEX_FILES.items()}
    batches = ((slice(s, min(s + 128, len(values))), values[s:s + 128]) for s in range(0, len(values), 128))
    return write_index_files(batches, values.shape, paths, groups=LISTED)


def _open(tmp_path, description, n=N) -> HeadVectors:
    relative = {**description,
                "files": {name: {**entry, "path": str(entry["path"]).replace(f"{tmp_path}/", "")}
                          for name, entry in description["files"].items()}}
    return open_index_files(relative, tmp_path, n_images=n, n_layers=LAYERS, n_heads=HEADS,
                            manifest=tmp_path / "explorer.json")


@pytest.fixture()
def written(tmp_path):
    values = _contributions()
    return tmp_path, values, _write(tmp_path, values)


def test_files_round_trip_head_major(written):
    tmp_path, values, description = written
    vectors = _open(tmp_path, description)
    assert description["files"]["search"]["shape"] == [LAYERS, HEADS, N, WIDTH]
    np.testing.assert_array_equal(vectors.exact, values.transpose(1, 2, 0, 3))
    np.testing.assert_array_equal(vectors.search, values.transpose(1, 2, 0, 3).astype(np.float16))
    np.testing.assert_allclose(vectors.norms[1, 2], np.linalg.norm(values[:, 1, 2].astype(np.float64), axis=1),
                               rtol=1e-7)
    assert vectors.search.dtype == np.float16 and not vectors.exact.flags.writeable
    summed = values[:, 0, 1].astype(np.float64) + values[:, 1, 0] + values[:, 1, 2]
    np.testing.assert_array_equal(vectors.group_search[0], summed.astype(np.float16))
    np.testing.assert_allclose(vectors.group_norms[0], np.linalg.norm(summed, axis=1), rtol=1e-7)
    assert description["groups"] == [[list(p) for p in group] for group in LISTED]
    vectors.release()


@pytest.mark.parametrize("change, message", [
    (lambda d: d["files"]["search"].update(shape=[LAYERS, HEADS, N + 1, WIDTH]), "records float16"),
    (lambda d: d["files"]["exact"].update(dtype="float16"), "expected float32"),
    (lambda d: d["files"]["norms"].update(digest="0" * 64), "stale or replaced"),
    (lambda d: d["files"].pop("exact"), "names no ['exact']"),
    (lambda d: d["groups"].pop(), "explorer_groups.f16.npy has shape [2, 700, 24]"),
])
def test_a_file_that_disagrees_with_the_manifest_is_named(written, change, message):
    tmp_path, _, description = written
    description = json.loads(json.dumps(description))
    change(description)
    with pytest.raises(InputError, match="rebuild them: snakemake --cores 1 --forcerun heads_explorer_index") as error:
        _open(tmp_path, description)
    assert message in str(error.value)


def test_a_rewritten_or_foreign_file_is_refused(written):
    tmp_path, values, description = written
    _write(tmp_path, _contributions(seed=1))                       # same shapes, other contents: stale
    with pytest.raises(InputError, match="explorer_index.f16.npy.*stale or replaced"):
        _open(tmp_path, description)
    with pytest.raises(InputError, match="describes 699 images"):
        _open(tmp_path, _write(tmp_path, values), n=N - 1)
    np.save(tmp_path / "explorer_index.f16.npy", np.zeros(3))
    with pytest.raises(InputError, match="explorer_index.f16.npy holds float64 \\[3\\]"):
        _open(tmp_path, description)


def test_values_outside_float16_are_refused_and_nothing_is_written(tmp_path):
    values = _contributions(n=40)
    values[7, 0, 0, 0] = 1e6
    with pytest.raises(InputError, match="rows 0..39 .* outside float16"):
        _write(tmp_path, values)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("group", GROUPS)
def test_the_candidate_search_equals_the_exact_search(written, group, similarity):
    tmp_path, values, description = written
    vectors = _open(tmp_path, description)
    rng = np.random.default_rng(len(group))
    queries = [values[3].transpose(0, 1, 2)[tuple(zip(*group))].sum(0),   # the duplicated row's own sum: ties
               rng.standard_normal(WIDTH).astype(np.float32),
               values[100, 0, 0] * np.float32(1e-3)]
    for query in queries:
        for k in (1, 3, 10, N, N + 5):
            rows, scores = vectors.top_k(group, query, k, similarity)
            expected_rows, expected_scores = vectors.brute_force_top_k(group, query, k, similarity)
            np.testing.assert_array_equal(rows, expected_rows)
            np.testing.assert_array_equal(scores, expected_scores)
            assert len(rows) == min(k, N)


def test_ties_go_to_the_lower_row_and_the_float32_index_agrees(written):
    tmp_path, values, description = written
    vectors = _open(tmp_path, description)
    in_memory = HeadVectors.in_memory(values.transpose(1, 2, 0, 3))
    query = values[3, 1, 1]
    rows, scores = vectors.top_k([(1, 1)], query, 4)
    assert rows[:2].tolist() == [3, 10] and scores[0] == scores[1]       # duplicates tie: lower row first
    assert 11 in rows and 12 in rows
    # cosine of a row with itself, in float64 from float32 values
    assert scores[0] == pytest.approx(1.0, abs=1e-12)
    memory_rows, memory_scores = in_memory.top_k([(1, 1)], query, 4)
    np.testing.assert_array_equal(rows, memory_rows)
    np.testing.assert_array_equal(scores, memory_scores)


def test_a_zero_query_or_zero_row_scores_zero(written):
    tmp_path, _, description = written
    vectors = _open(tmp_path, description)
    rows, scores = vectors.top_k([(0, 0)], np.zeros(WIDTH, np.float32), 3)
    assert rows.tolist() == [0, 1, 2] and scores.tolist() == [0.0, 0.0, 0.0]
    all_rows, all_scores = vectors.top_k([(0, 0)], np.ones(WIDTH, np.float32), N)
    assert all_scores[all_rows.tolist().index(20)] == 0.0


def test_the_bound_keeps_few_candidates(written):
    tmp_path, values, description = written
    vectors = _open(tmp_path, description)
    query = np.random.default_rng(5).standard_normal(WIDTH).astype(np.float32)
    scores, errors = vectors.approximate([(0, 2)], query, "cosine")
    candidates = vectors.candidates(scores, errors, 5)
    assert 5 + 16 <= len(candidates) < N // 2
    exact = np.linalg.norm(values[:, 0, 2].astype(np.float64), axis=1)
    finite = np.isfinite(errors) & (exact > 0)
    true = values[finite, 0, 2].astype(np.float64) @ query / (exact[finite] * np.linalg.norm(query.astype(np.float64)))
    assert np.all(np.abs(scores[finite] - true) <= errors[finite])


def test_a_listed_group_is_scanned_from_its_sum_and_others_head_by_head(written):
    tmp_path, _, description = written
    vectors = _open(tmp_path, description)
    blocks, _, count = vectors._scanned([(1, 2), (0, 1), (1, 0)])
    assert [block[:2] for block in blocks] == [("group_search", 0)] and count == 1
    blocks, _, count = vectors._scanned(GROUPS[4])
    assert [block[:2] for block in blocks] == [("search", (0, 2)), ("search", (1, 1))] and count == 2
    with pytest.raises(InputError, match="outside the index"):
        write_index_files(iter([]), (N, LAYERS, HEADS, WIDTH), {}, groups=[[(2, 0)]])


def test_the_description_names_every_file(written):
    tmp_path, _, description = written
    assert set(description["files"]) == set(INDEX_FILES)
    assert describe({"norms": tmp_path / "explorer_norms.f32.npy"})["files"]["norms"]["dtype"] == "float32"
