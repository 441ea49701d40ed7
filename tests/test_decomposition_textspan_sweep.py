"""TEXTSPAN's K sweep: the prefix property it rests on, its two baselines and its table on a tiny model's terms."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clip_interp.decomposition import classifier as Z
from clip_interp.decomposition.components import decompose
from clip_interp.decomposition.figures import accuracy_vs_texts_per_head
from clip_interp.decomposition.table import ComponentTable
from clip_interp.decomposition.textspan import (
    head_moments,
    reconstruction_accuracy,
    textspan_covariance,
    textspan_heads,
)
from clip_interp.decomposition.textspan_sweep import (
    check_sweep_sizes,
    principal_directions,
    random_text_directions,
    sweep_directions,
    textspan_sweep,
)
from clip_interp.errors import InputError


def _head_like(n=300, d=24, m=120, seed=0):
    """Contributions (n, d) with a decaying spectrum and an offset, and m random texts (m, d)."""
    g = torch.Generator().manual_seed(seed)
    spectrum = torch.linspace(3, 0.1, d)
    rotation = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    return torch.randn(n, d, generator=g) * spectrum @ rotation + 0.3, torch.randn(m, d, generator=g)


@pytest.mark.parametrize("rank", [16, 24])
def test_a_prefix_of_the_largest_run_is_the_run_at_that_k(rank):
    contributions, texts = _head_like()
    largest = textspan_covariance(contributions, texts, 16, rank)
    for k in (1, 5, 11, 16):
        fresh, prefix = textspan_covariance(contributions, texts, k, rank), largest.prefix(k)
        assert prefix.texts.tolist() == fresh.texts.tolist()
        assert torch.equal(prefix.directions, fresh.directions)
        np.testing.assert_array_equal(prefix.cumulative, fresh.cumulative)
        assert torch.equal(prefix.reconstruct(contributions), fresh.reconstruct(contributions))
    with pytest.raises(InputError, match="prefix of 17"):
        largest.prefix(17)


def test_principal_components_explain_at_least_textspans_variance_for_every_k():
    for seed in range(3):
        contributions, texts = _head_like(seed=seed)
        moments = head_moments(contributions, 20)
        span = textspan_covariance(contributions, texts, 20, 20)
        pcs = principal_directions(moments, 20)
        assert np.all(pcs.cumulative >= span.cumulative - 1e-9), (pcs.cumulative, span.cumulative)
        assert pcs.cumulative[0] > span.cumulative[0]  # random texts do not hit the top eigenvector
        gram = pcs.directions.double() @ pcs.directions.double().T
        torch.testing.assert_close(gram, torch.eye(20, dtype=torch.float64), atol=1e-5, rtol=0)
        covariance = torch.cov(contributions.double().T, correction=0)
        top = torch.linalg.eigvalsh(covariance).flip(0)[:20]
        np.testing.assert_allclose(pcs.variance, top.numpy(), rtol=1e-7)  # the top eigenvalues, in order
        assert (pcs.texts == -1).all()


def test_random_texts_are_seeded_distinct_and_orthonormalised_in_the_drawn_order():
    contributions, texts = _head_like(m=50)
    moments = head_moments(contributions, 16)
    one = random_text_directions(moments, texts, 12, np.random.default_rng([0, 3, 1]))
    again = random_text_directions(moments, texts, 12, np.random.default_rng([0, 3, 1]))
    other = random_text_directions(moments, texts, 12, np.random.default_rng([1, 3, 1]))
    assert one.texts.tolist() == again.texts.tolist() and torch.equal(one.directions, again.directions)
    assert one.texts.tolist() != other.texts.tolist()
    assert len(set(one.texts.tolist())) == 12 and one.texts.max() < 50
    assert one.texts.tolist() == np.random.default_rng([0, 3, 1]).permutation(50)[:12].tolist()
    shorter = random_text_directions(moments, texts, 5, np.random.default_rng([0, 3, 1]))
    assert shorter.texts.tolist() == one.texts[:5].tolist()  # a prefix, as TEXTSPAN's
    torch.testing.assert_close(shorter.directions, one.directions[:5], atol=1e-6, rtol=0)
    gram = one.directions.double() @ one.directions.double().T
    torch.testing.assert_close(gram, torch.eye(12, dtype=torch.float64), atol=1e-5, rtol=0)
    projected = F.normalize(texts[one.texts[0]].double(), dim=-1) @ moments.basis @ moments.basis.T
    torch.testing.assert_close(one.directions[0].double(), F.normalize(projected, dim=0), atol=1e-6, rtol=0)
    # each direction: its text, projected, minus its parts along the earlier directions (Gram-Schmidt)
    second = F.normalize(texts[one.texts[1]].double(), dim=-1) @ moments.basis @ moments.basis.T
    first = one.directions[0].double()
    torch.testing.assert_close(one.directions[1].double(), F.normalize(second - (second @ first) * first, dim=0),
                               atol=1e-6, rtol=0)
    with pytest.raises(InputError, match="at most 16"):
        random_text_directions(moments, texts, 17, np.random.default_rng(0))


def test_sweep_sizes_are_checked_against_the_rank_and_every_pool():
    check_sweep_sizes([10, 20], 20, {"descriptions": 20, "words": 30})
    with pytest.raises(InputError, match=r"`decomposition.textspan.sweep.texts_per_head` \(largest 30\) exceeds "
                                         r"`decomposition.textspan.rank` \(20\)"):
        check_sweep_sizes([10, 30], 20, {"descriptions": 100})
    with pytest.raises(InputError, match=r"the pool `decomposition.sources.words` has 8 texts"):
        check_sweep_sizes([5, 10], 20, {"descriptions": 100, "words": 8})


@pytest.fixture(scope="module")
def terms_and_classifier(tiny_clip, one_thread):
    pixels = torch.randn(12, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    table = ComponentTable.from_decompositions([decompose(tiny_clip.vision, pixels[:6]),
                                                decompose(tiny_clip.vision, pixels[6:])])
    classifier = Z.zero_shot_classifier(tiny_clip, ["red circle", "blue square", "green triangle", "black cross"],
                                        ["a photo of a {}.", "{} on a plain background"])
    return table, classifier


def test_the_sweep_table_on_a_tiny_models_terms(terms_and_classifier, tmp_path):
    table, classifier = terms_and_classifier
    labels = Z.predict(table.arrays["embedding"], classifier).numpy()
    e = table.arrays["embedding"].shape[1]
    g = torch.Generator().manual_seed(6)
    pools = {"descriptions": torch.randn(80, e, generator=g), "words": torch.randn(70, e, generator=g)}
    ks = [2, 8, e]
    sweep = textspan_sweep(table, pools, classifier, labels, [2, 3], ks, e, seed=4, batch_size=5)
    assert len(sweep) == 5 * len(ks) and set(sweep["method"]) == {"textspan", "principal_components", "random_texts"}
    assert sweep[sweep["method"] == "principal_components"]["pool"].isna().all()
    assert (sweep["n_images"] == 12).all() and (sweep["n_heads"] == 2 * table.n_heads).all()
    assert (sweep["accuracy_no_ablation"] == 1.0).all()  # the labels are the model's own predictions
    before = Z.Ablation.layers(table.n_layers, table.n_heads, attention=[1])
    exact = Z.ablation_accuracies(table, classifier, labels, [before])["accuracy"].iloc[0]
    assert (sweep["accuracy_heads_exact"] == exact).all()
    full = sweep[sweep["texts_per_head"] == e]  # a full basis reconstructs every head exactly
    assert (full["accuracy"] == exact).all() and np.allclose(full["variance_share"], 1.0)
    directions = sweep_directions(table, pools, [2, 3], e, e, seed=4)
    for (method, pool), spans in directions.items():
        rows = sweep[(sweep["method"] == method) & (sweep["pool"].isna() if pool is None else sweep["pool"] == pool)]
        for k, accuracy in zip(rows["texts_per_head"], rows["accuracy"]):
            prefixes = {head: span.prefix(k) for head, span in spans.items()}
            assert accuracy == reconstruction_accuracy(table, prefixes, classifier, labels), (method, pool, k)
    for k in ks:  # the sweep's TEXTSPAN at K is a fresh TEXTSPAN run at K
        fresh = textspan_heads(table, pools["words"], [2, 3], k, e)
        for head, span in fresh.items():
            assert directions[("textspan", "words")][head].prefix(k).texts.tolist() == span.texts.tolist()
        row = sweep[(sweep["method"] == "textspan") & (sweep["pool"] == "words") & (sweep["texts_per_head"] == k)]
        assert row["accuracy"].item() == reconstruction_accuracy(table, fresh, classifier, labels)
    by_k = sweep.pivot_table(index="texts_per_head", columns=["method"], values="variance_share", aggfunc="max")
    assert (by_k["principal_components"] >= by_k["textspan"] - 1e-9).all()
    paths = [tmp_path / "sweep.png", tmp_path / "sweep.pdf"]
    accuracy_vs_texts_per_head(sweep, paths, "tiny")
    assert all(p.stat().st_size > 1000 for p in paths)
