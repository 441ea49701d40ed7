"""The decomposition study's library on a tiny random-init CLIP: conventions, mean-ablation, TEXTSPAN,
segmentation maps and metrics, spurious-feature groups, neighbours, and the reference algorithm."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clip_interp.decomposition import classifier as Z
from clip_interp.decomposition.components import decompose
from clip_interp.decomposition.neighbours import head_neighbours, image_query
from clip_interp.decomposition.reference import reference_decompose
from clip_interp.decomposition.segmentation import (
    SegmentationMetrics,
    attention_rollout_scores,
    binarise,
    decomposition_scores,
    last_layer_attention_scores,
    method_scores,
    preprocess_mask,
    scores_to_maps,
)
from clip_interp.decomposition.spurious import (
    group_accuracies,
    select_heads_by_descriptions,
    spurious_table,
    waterbirds_ablation,
)
from clip_interp.decomposition.table import ComponentTable, component_means
from clip_interp.decomposition.textspan import (
    reconstruction_accuracy,
    textspan_covariance,
    textspan_direct,
    textspan_heads,
    textspan_table,
)
from clip_interp.errors import InputError

CLASSES = ["red circle", "blue square", "green triangle", "yellow star", "black cross"]
TEMPLATES = ["a photo of a {}.", lambda c: f"a drawing of the {c}.", "{} on a plain background"]


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(12, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def biased_clip(tiny_clip):
    """A copy of the tiny model with random LayerNorm weights and biases and attention/MLP biases (random init
    leaves them 1 and 0, which would hide a mishandled bias or LayerNorm scale)."""
    import copy

    from clip_interp.models.loading import hook_open_clip

    model = copy.deepcopy(tiny_clip.source_model)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in model.visual.named_parameters():
            if name.endswith("bias") or ("ln" in name and name.endswith("weight")):
                parameter.copy_(parameter + 0.3 * torch.randn(parameter.shape, generator=g))
    return hook_open_clip(model, tiny_clip.tokenizer, tiny_clip.preprocess, tiny_clip.spec, tiny_clip.device)


@pytest.fixture(scope="module")
def table(tiny_clip, pixels, one_thread):
    return ComponentTable.from_decompositions([decompose(tiny_clip.vision, pixels[:7]),
                                               decompose(tiny_clip.vision, pixels[7:])])


@pytest.fixture(scope="module")
def classifier(tiny_clip, one_thread):
    return Z.zero_shot_classifier(tiny_clip, CLASSES, TEMPLATES)


@pytest.mark.parametrize("convention", ["per_component", "uniform"])
@pytest.mark.parametrize("sources", ["sum", "keep", "map"])
def test_terms_sum_to_the_embedding_on_the_tiny_model(biased_clip, pixels, convention, sources, one_thread):
    parts = decompose(biased_clip.vision, pixels[:3], convention=convention, sources=sources)
    library = biased_clip.source_model.encode_image(pixels[:3])
    torch.testing.assert_close(parts.total(), library, atol=1e-5, rtol=1e-5)
    directions = torch.randn(library.shape[1], 4, generator=torch.Generator().manual_seed(2))
    projected = decompose(biased_clip.vision, pixels[:3], convention=convention, sources=sources, directions=directions)
    torch.testing.assert_close(projected.total(), library @ directions, atol=1e-5, rtol=1e-5)


def test_conventions_differ_only_in_how_they_share_the_layernorm(biased_clip, pixels, one_thread):
    """per_component keeps the biases apart; uniform folds them in: totals agree, terms differ."""
    a = decompose(biased_clip.vision, pixels[:2], convention="per_component")
    b = decompose(biased_clip.vision, pixels[:2], convention="uniform")
    assert b.attn_bias.abs().max() == 0 and b.ln_bias.abs().max() == 0
    assert a.ln_bias.abs().max() > 0 and a.attn_bias.abs().max() > 0
    assert (a.heads - b.heads).abs().max() > 1e-4
    torch.testing.assert_close(a.total(), b.total(), atol=1e-5, rtol=1e-5)
    L = biased_clip.vision.n_layers
    shift = b.mlps - a.mlps  # uniform - per_component for an MLP: (mu(c) - mu(r)/(2L+1)) u / sigma + b/(2L+1)
    assert shift.abs().max() > 0
    torch.testing.assert_close(b.embedding_term.sum(0) * 0 + b.total().sum(0), a.total().sum(0), atol=1e-5, rtol=0)
    assert L == 3


def test_per_source_terms_sum_to_the_head_terms(biased_clip, pixels, one_thread):
    summed = decompose(biased_clip.vision, pixels[:2], sources="sum")
    kept = decompose(biased_clip.vision, pixels[:2], sources="keep")
    mapped = decompose(biased_clip.vision, pixels[:2], sources="map")
    torch.testing.assert_close(kept.heads.sum(3), summed.heads, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(kept.heads.sum(dim=(1, 2)), mapped.heads, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("convention", ["per_component", "uniform"])
def test_reference_algorithm_agrees(biased_clip, pixels, convention, one_thread):
    fast = decompose(biased_clip.vision, pixels[:3], convention=convention)
    slow = reference_decompose(biased_clip.vision, pixels[:3], convention=convention)
    for name in ("embedding_term", "heads", "attn_bias", "mlps", "ln_bias"):
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name), atol=1e-5, rtol=1e-5)


def test_bad_convention_and_tower(tiny_clip, pixels):
    with pytest.raises(InputError, match="convention"):
        decompose(tiny_clip.vision, pixels[:1], convention="paper")
    with pytest.raises(InputError, match="sources"):
        decompose(tiny_clip.vision, pixels[:1], sources="all")
    with pytest.raises(InputError, match="vision tower"):
        decompose(tiny_clip.text, pixels[:1])


# --------------------------------------------------------------------------- zero-shot and mean-ablation


def test_classifier_is_the_renormalised_mean_of_unit_template_embeddings(tiny_clip, classifier):
    from clip_interp.encoding import encode_texts

    prompts = [Z.fill_template(t, CLASSES[1]) for t in TEMPLATES]
    assert prompts[1] == "a drawing of the blue square."
    expected = F.normalize(F.normalize(encode_texts(tiny_clip, prompts), dim=-1).mean(0), dim=0)
    torch.testing.assert_close(classifier[1], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(classifier.norm(dim=-1), torch.ones(len(CLASSES)))
    with pytest.raises(InputError, match="placeholder"):
        Z.fill_template("a photo", "cat")


def test_imagenet_metadata_from_open_clip():
    names, templates = Z.imagenet_zero_shot_metadata()
    assert len(names) == 1000 and len(templates) == 80
    assert names[0] == "tench" and templates[0]("cat") == "a bad photo of a cat."


def test_ablating_nothing_reproduces_zero_shot_accuracy_exactly(table, classifier):
    labels = Z.predict(table.arrays["embedding"], classifier).numpy()
    labels[:3] = (labels[:3] + 1) % len(CLASSES)  # not every prediction right: accuracy 9/12
    result = Z.ablation_accuracies(table, classifier, labels, [Z.Ablation.none(table.n_layers, table.n_heads)],
                                   batch_size=5)
    assert result.loc[0, "accuracy"] == 9 / 12
    means = component_means(table)
    for _, terms in table.batches(5):
        ablated = Z.ablated_embeddings(terms, means, Z.Ablation.none(table.n_layers, table.n_heads))
        assert torch.equal(ablated, terms["embedding"])


def test_ablating_everything_gives_the_mean_embeddings_accuracy(table, classifier):
    labels = np.arange(table.n) % len(CLASSES)
    mean_class = Z.predict(table.arrays["embedding"].mean(0, keepdim=True), classifier).item()
    everything = Z.Ablation.everything(table.n_layers, table.n_heads)
    result = Z.ablation_accuracies(table, classifier, labels, [everything], batch_size=5)
    assert result.loc[0, "accuracy"] == np.mean(labels == mean_class)
    assert result.loc[0, "ablated"] == result.loc[0, "components"] == 2 + table.n_layers * (table.n_heads + 2)
    means = component_means(table)
    _, terms = next(table.batches(4))
    ablated = Z.ablated_embeddings(terms, means, everything)
    torch.testing.assert_close(ablated, means["embedding"].expand_as(ablated), atol=1e-5, rtol=0)


def test_ablating_one_head_replaces_exactly_that_term(table):
    means = component_means(table)
    _, terms = next(table.batches(6))
    ablation = Z.Ablation.of_heads(table.n_layers, table.n_heads, [(2, 1)])
    expected = terms["embedding"] - terms["heads"][:, 1, 1] + means["heads"][1, 1]
    torch.testing.assert_close(Z.ablated_embeddings(terms, means, ablation), expected, atol=1e-6, rtol=0)
    layers = Z.layer_ablation_curve(table.n_layers, table.n_heads)
    assert [a.count()[0] for a in layers] == [k * (table.n_heads + 1) for k in range(table.n_layers + 1)]
    with pytest.raises(InputError, match="layers are numbered 1..3"):
        Z.Ablation.of_heads(3, table.n_heads, [(4, 0)])
    with pytest.raises(InputError, match="heads are numbered"):
        Z.Ablation.of_heads(3, table.n_heads, [(1, table.n_heads)])
    with pytest.raises(InputError, match="labels"):
        Z.ablation_accuracies(table, torch.eye(2, 64), [0, 1], [ablation])


# --------------------------------------------------------------------------- TEXTSPAN


def _head_like(n=400, d=24, m=150, seed=0):
    g = torch.Generator().manual_seed(seed)
    spectrum = torch.linspace(3, 0.1, d)
    contributions = torch.randn(n, d, generator=g) * spectrum @ torch.linalg.qr(torch.randn(d, d, generator=g))[0] + 0.3
    return contributions, torch.randn(m, d, generator=g)


@pytest.mark.parametrize("rank", [12, 24])
def test_textspan_covariance_form_equals_the_direct_form(rank):
    contributions, texts = _head_like()
    direct = textspan_direct(contributions, texts, 12, rank)
    covariance = textspan_covariance(contributions, texts, 12, rank)
    assert direct.texts.tolist() == covariance.texts.tolist()
    np.testing.assert_allclose(covariance.variance, direct.variance, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(covariance.cumulative, direct.cumulative, rtol=1e-5, atol=1e-8)
    assert np.all(np.diff(direct.cumulative) > 0) and direct.cumulative[-1] <= 1 + 1e-9


def test_textspan_directions_are_orthonormal_and_reconstruct():
    contributions, texts = _head_like(d=16, m=80)
    span = textspan_covariance(contributions, texts, 16, 16)
    gram = span.directions.double() @ span.directions.double().T
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(span.reconstruct(contributions), contributions, atol=1e-4, rtol=1e-4)  # full basis
    assert span.cumulative[-1] == pytest.approx(1.0, abs=1e-6)
    first = textspan_direct(contributions, texts, 1, 16)
    unit = F.normalize(texts.double(), dim=-1)
    centred = contributions.double() - contributions.double().mean(0)
    assert first.texts[0] == int(((centred @ unit.T) ** 2).mean(0).argmax())  # step 3 by hand, rank = D


def test_textspan_picks_a_planted_direction():
    g = torch.Generator().manual_seed(3)
    texts = F.normalize(torch.randn(50, 20, generator=g), dim=-1)
    contributions = torch.randn(300, 1, generator=g) * 5 * texts[17] + 0.05 * torch.randn(300, 20, generator=g)
    for form in (textspan_direct, textspan_covariance):
        span = form(contributions, texts, 3, 20)
        assert span.texts[0] == 17 and span.share[0] > 0.95


def test_textspan_errors():
    contributions, texts = _head_like(d=8, m=10)
    with pytest.raises(InputError, match="pool has 10"):
        textspan_covariance(contributions, texts, 11, 4)
    with pytest.raises(InputError, match="one width"):
        textspan_direct(contributions, texts[:, :4], 2, 4)
    with pytest.raises(InputError, match="rank"):
        textspan_direct(contributions, texts, 2, 0)
    with pytest.raises(InputError, match="exceed the rank"):
        textspan_covariance(contributions, texts, 5, 4)


def test_textspan_over_heads_and_reconstruction_check(table, classifier):
    g = torch.Generator().manual_seed(4)
    pool = torch.randn(40, table.arrays["heads"].shape[-1], generator=g)
    spans = textspan_heads(table, pool, [3], 5, 8)
    assert sorted(spans) == [(3, h) for h in range(table.n_heads)]
    frame = textspan_table(spans, [f"text {i}" for i in range(40)])
    assert len(frame) == 5 * table.n_heads and frame["rank"].max() == 5
    labels = Z.predict(table.arrays["embedding"], classifier).numpy()
    accuracy = reconstruction_accuracy(table, spans, classifier, labels, batch_size=5)
    assert 0 <= accuracy <= 1
    full = textspan_heads(table, torch.randn(200, pool.shape[1], generator=g), [1, 2, 3], pool.shape[1], pool.shape[1])
    assert reconstruction_accuracy(table, full, classifier, labels) == 1.0  # full bases reconstruct every head


# --------------------------------------------------------------------------- segmentation


def test_segmentation_metrics_on_hand_made_maps():
    soft = torch.tensor([[[0.9, 0.8], [0.1, 0.0]], [[0.2, 1.0], [0.6, 0.4]]])
    truth = np.array([[[1, 1], [0, 0]], [[0, 1], [0, 1]]], dtype=bool)
    metrics = SegmentationMetrics()
    metrics.update(soft, truth)
    result = metrics.result()
    # image 1: mean 0.45 -> pred [[1,1],[0,0]] all correct; image 2: mean 0.55 -> pred [[0,1],[1,0]], 2 of 4 correct
    assert result["pixel_accuracy"] == pytest.approx(6 / 8)
    # background: inter 2 + 1, union 2 + 3; foreground: inter 2 + 1, union 2 + 3
    assert result["miou"] == pytest.approx(0.5 * (3 / 5 + 3 / 5))
    # AP: image 1 ranks both positives first -> 1; image 2 scores 1.0(+), 0.6(-), 0.4(+), 0.2(-) -> (1 + 2/3) / 2
    assert result["map"] == pytest.approx((1 + (1 + 2 / 3) / 2) / 2)
    assert result["n_images"] == 2 and result["n_images_without_ap"] == 0


def test_segmentation_metrics_count_images_without_ap_and_check_shapes():
    metrics = SegmentationMetrics()
    metrics.update(torch.rand(1, 3, 3), np.zeros((1, 3, 3), dtype=bool))
    assert metrics.result()["n_images_without_ap"] == 1 and np.isnan(metrics.result()["map"])
    with pytest.raises(InputError, match="differ in shape"):
        metrics.update(torch.rand(1, 3, 3), np.zeros((1, 4, 4), dtype=bool))


def test_maps_are_upsampled_normalised_and_thresholded():
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    maps = scores_to_maps(scores, (2, 2), (4, 4))
    assert maps.shape == (1, 4, 4) and maps.min() == 0 and maps.max() == 1
    assert maps[0, 0, 0] == 0 and maps[0, 3, 3] == 1  # corners keep the patch values (align_corners=False)
    assert binarise(maps)[0].sum() == (maps[0] > maps[0].mean()).sum()
    assert scores_to_maps(torch.ones(1, 4), (2, 2), (4, 4)).abs().max() == 0  # a constant map is all background
    with pytest.raises(InputError, match="patch grid"):
        scores_to_maps(scores, (3, 3), (4, 4))


def test_mask_follows_the_image_geometry():
    mask = np.zeros((100, 200), dtype=np.uint8)
    mask[:, 100:] = 1  # right half
    out = preprocess_mask(mask, 50)  # 100x200 -> 50x100 -> centre 50x50 covers columns 25..74 of 100
    assert out.shape == (50, 50) and out[:, :25].sum() == 0 and out[:, 25:].all()


def test_mask_geometry_matches_the_image_preprocessing(tiny_clip):
    """A mask drawn where the image is white lands where the preprocessed image is white."""
    from PIL import Image

    image = np.zeros((90, 130, 3), dtype=np.uint8)
    image[20:70, 30:60] = 255
    pixels = tiny_clip.preprocess(Image.fromarray(image))
    white = pixels.mean(0) > pixels.mean()
    mask = preprocess_mask(image[..., 0] > 0, tiny_clip.image_size)
    assert (torch.as_tensor(mask) == white).float().mean() > 0.97  # up to the bicubic edge


def test_segmentation_evaluation_over_items(tiny_clip, classifier, one_thread):
    from clip_interp.decomposition.segmentation import METHODS, evaluate_segmentation

    rng = np.random.default_rng(0)
    items = []
    for _ in range(3):
        image = rng.integers(0, 255, (70, 80, 3), dtype=np.uint8)
        mask = np.zeros((70, 80), dtype=bool)
        mask[10:40, 20:50] = True
        items.append((image, mask))
    table = evaluate_segmentation(tiny_clip, items, classifier, batch_size=2)
    assert table["method"].tolist() == list(METHODS) and (table["n_images"] == 3).all()
    scores = table[["pixel_accuracy", "miou", "map"]]
    assert ((scores >= 0) & (scores <= 1)).all().all()


def test_segmentation_scores_of_each_method(tiny_clip, pixels, classifier, one_thread):
    n_patches = tiny_clip.vision.grid_size[0] * tiny_clip.vision.grid_size[1]
    scores, predicted = decomposition_scores(tiny_clip.vision, pixels[:3], classifier)
    assert scores.shape == (3, n_patches)
    kept = decompose(tiny_clip.vision, pixels[:3], sources="keep")
    direction = classifier - classifier.mean(0)
    by_hand = torch.einsum("blhte,be->bt", kept.heads[:, :, :, 1:], direction[predicted])
    torch.testing.assert_close(scores, by_hand, atol=1e-5, rtol=1e-4)
    last = last_layer_attention_scores(tiny_clip.vision, pixels[:3])
    pattern = tiny_clip.vision.run(pixels[:3], cache=["pattern"]).cache[("pattern", 3)]
    torch.testing.assert_close(last, pattern[:, :, 0, 1:].mean(1), atol=1e-6, rtol=0)
    rollout = attention_rollout_scores(tiny_clip.vision, pixels[:3])
    assert rollout.shape == (3, n_patches) and (rollout > 0).all()
    with pytest.raises(InputError, match="unknown segmentation method"):
        method_scores("gradcam", tiny_clip.vision, pixels[:1])


def test_rollout_of_identity_attention_is_uniform_on_the_class_token():
    """With attention on self only, the rollout is the identity: no patch gets any score."""
    class Fake:
        n_layers = 2

        def run(self, pixels, hooks):
            eye = torch.eye(5).expand(1, 2, 5, 5)
            for key, hook in hooks.items():
                hook(eye, key)

    assert attention_rollout_scores(Fake(), torch.zeros(1)).abs().max() == 0


# --------------------------------------------------------------------------- spurious features and neighbours


def test_group_accuracies_by_hand():
    y = [0, 0, 0, 1, 1, 1, 1, 0]
    place = [0, 0, 1, 1, 1, 0, 0, 1]
    predicted = [0, 0, 1, 1, 0, 0, 0, 0]
    result = group_accuracies(predicted, y, place)
    assert result["landbird_on_land"] == 1.0 and result["landbird_on_water"] == 0.5
    assert result["waterbird_on_water"] == 0.5 and result["waterbird_on_land"] == 0.0
    assert result["average"] == 4 / 8 and result["worst_group"] == 0.0
    assert result["mean_group"] == (1.0 + 0.5 + 0.5 + 0.0) / 4
    assert result["n_waterbird_on_land"] == 2
    with pytest.raises(InputError):
        group_accuracies([0], [0, 1], [0, 1])


def test_spurious_table_and_head_selection(table, tiny_clip):
    bird_classifier = Z.zero_shot_classifier(tiny_clip, ["landbird", "waterbird"], ["a photo of a {}."])
    y = np.arange(table.n) % 2
    place = (np.arange(table.n) // 2) % 2
    frame = spurious_table(table, bird_classifier, y, place, [(3, 0), (3, 1)], configured="heads_only",
                           kept_layers=2, batch_size=5)
    assert frame["condition"].tolist() == ["baseline", "ablated", "ablated"]
    assert frame["ablation_mode"].tolist() == ["none", "paper", "heads_only"]
    assert frame["configured"].tolist() == [False, False, True]
    assert frame["components_ablated"].tolist() == [0, 2 + 4 + 1 + 3 + 1, 2]  # layer 1's heads and bias, MLPs, e_0
    baseline = Z.predict(table.arrays["embedding"], bird_classifier).numpy()
    assert frame.loc[0, "average"] == np.mean(baseline == y)
    for row, mode in ((1, "paper"), (2, "heads_only")):
        ablation = waterbirds_ablation(3, 4, [(3, 0), (3, 1)], mode, kept_layers=2)
        predicted = Z.predict(direct_ablation(table, ablation), bird_classifier).numpy()
        assert frame.loc[row, "worst_group"] == group_accuracies(predicted, y, place)["worst_group"]
    g = torch.Generator().manual_seed(5)
    pool = torch.randn(30, 64, generator=g)
    spans = textspan_heads(table, pool, [2, 3], 3, 16)
    places = pool[[4, 9]]  # descriptions equal to two pool texts
    chosen = select_heads_by_descriptions(spans, pool, places, 2)
    assert len(chosen) == 2 and chosen["score"].is_monotonic_decreasing
    best = max(spans, key=lambda k: float((spans[k].share * (F.normalize(pool[spans[k].texts], dim=-1)
                                                            @ F.normalize(places, dim=-1).T).amax(1).numpy()).sum()))
    assert (chosen.loc[0, "layer"], chosen.loc[0, "head"]) == best
    with pytest.raises(InputError, match="cannot select"):
        select_heads_by_descriptions(spans, pool, places, 99)


def direct_ablation(table, ablation):
    """e_S written out term by term: every component of the table, replaced by its mean over the images when the
    ablation's masks name it."""
    arrays = table.arrays
    mean = {name: value.double().mean(0) for name, value in arrays.items()}
    out = arrays["ln_bias"].double().clone() if not ablation.ln_bias else mean["ln_bias"].expand(table.n, -1).clone()
    out += mean["embedding_term"] if ablation.embedding_term else arrays["embedding_term"].double()
    for layer in range(table.n_layers):
        for name in ("attn_bias", "mlps"):
            out += mean[name][layer] if getattr(ablation, name)[layer] else arrays[name][:, layer].double()
        for head in range(table.n_heads):
            term = arrays["heads"][:, layer, head].double()
            out += mean["heads"][layer, head] if ablation.heads[layer, head] else term
    return out.float()


@pytest.mark.parametrize("kept_layers, earlier", [(1, [1, 2]), (2, [1]), (4, [])])
def test_waterbirds_paper_ablation_is_the_heads_the_earlier_layers_and_the_mlp_group(table, kept_layers, earlier):
    """Mode paper: exactly the listed heads, every head and attention bias of the layers before the last
    kept_layers, the embedding term and every MLP (the LN bias, a constant, is kept); heads_only: the heads alone,
    as Ablation.of_heads. Both checked against e_S computed term by term."""
    listed = [(3, 1), (2, 3), (3, 1)]
    paper = waterbirds_ablation(3, 4, listed, "paper", kept_layers=kept_layers)
    heads = {(layer + 1, head) for layer, head in paper.heads.nonzero().tolist()}
    assert heads == {(3, 1), (2, 3)} | {(layer, head) for layer in earlier for head in range(4)}
    assert paper.attn_bias.tolist() == [layer in earlier for layer in (1, 2, 3)]
    assert paper.mlps.all() and paper.embedding_term and not paper.ln_bias
    heads_only = waterbirds_ablation(3, 4, listed, "heads_only")
    reference = Z.Ablation.of_heads(3, 4, listed)
    for name, mask in heads_only.masks().items():
        assert torch.equal(mask, reference.masks()[name]), name
    means = component_means(table, 5)
    for ablation in (paper, heads_only):
        torch.testing.assert_close(Z.ablated_embeddings(table.arrays, means, ablation),
                                   direct_ablation(table, ablation), atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="unknown Waterbirds ablation 'all'"):
        waterbirds_ablation(3, 4, listed, "all")


def test_neighbours_rank_by_projected_contribution(table):
    query = image_query(table, 2, 1, 4)
    torch.testing.assert_close(query, table.arrays["heads"][4, 1, 1])
    frame = head_neighbours(table, 2, 1, query, 3, batch_size=5)
    scores = table.arrays["heads"][:, 1, 1] @ F.normalize(query, dim=0)
    assert frame["row"].tolist() == scores.argsort(descending=True)[:3].tolist()
    assert frame["row"].iloc[0] == 4  # an image is its own nearest neighbour
    assert 4 not in head_neighbours(table, 2, 1, query, 3, exclude=4)["row"].tolist()
    with pytest.raises(InputError, match="does not exist"):
        head_neighbours(table, 9, 0, query, 3)
