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
    SegmentationProtocol,
    aligned_mask,
    attention_rollout_scores,
    average_precision,
    binarise,
    decomposition_scores,
    input_mask,
    last_layer_attention_scores,
    method_scores,
    resized_mask,
    scores_to_maps,
    segmentation_maps,
    two_channel_average_precision,
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


def two_channel_ap_by_sklearn(soft, mask):
    """The paper's AP of one image, through sklearn: labels [~mask, mask], scores [1 - map, map]."""
    from sklearn.metrics import average_precision_score

    soft, mask = np.asarray(soft, dtype=np.float32).ravel(), np.asarray(mask, dtype=bool).ravel()
    return average_precision_score(np.r_[~mask, mask], np.r_[1 - soft, soft])


def test_segmentation_metrics_on_hand_made_maps():
    # dyadic values, so that 1 - map is exact in float32 and its ties are the ones written here
    soft = torch.tensor([[[1.0, 0.75], [0.25, 0.0]], [[0.25, 1.0], [0.75, 0.5]]])
    truth = np.array([[[1, 1], [0, 0]], [[0, 1], [0, 1]]], dtype=bool)
    metrics = SegmentationMetrics()
    metrics.update(soft, truth)
    result = metrics.result()
    # image 1: mean 0.5 -> pred [[1,1],[0,0]] all correct; image 2: mean 0.625 -> pred [[0,1],[1,0]], 2 of 4 correct
    assert result["pixel_accuracy"] == pytest.approx(6 / 8)
    # background: inter 2 + 1, union 2 + 3; foreground: inter 2 + 1, union 2 + 3 (pooled over the images)
    assert result["iou_background"] == pytest.approx(3 / 5) and result["iou_foreground"] == pytest.approx(3 / 5)
    assert result["miou"] == pytest.approx(0.5 * (3 / 5 + 3 / 5))
    # AP over both channels. Image 1: background scores 1 - map put its two background pixels at 1.0 and 0.75
    # beside the two foreground pixels -> every positive ranks first, AP 1. Image 2: scores (label) in decreasing
    # order 1.0(+), 0.75(-) 0.75(+), 0.5(+) 0.5(-), 0.25(-) 0.25(+), 0.0(-); tied scores form one step, 4 positives:
    # AP = (1 * 1/1 + 1 * 2/3 + 1 * 3/5 + 1 * 4/7) / 4
    second = (1 + 2 / 3 + 3 / 5 + 4 / 7) / 4
    assert metrics.average_precisions == pytest.approx([1.0, second])
    assert second == pytest.approx(two_channel_ap_by_sklearn(soft[1], truth[1]))
    assert result["map"] == pytest.approx((1 + second) / 2) and result["n_images"] == 2


def test_average_precision_matches_sklearn_with_ties():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(1, 40))
        scores = (rng.integers(0, 4, n) / 4 if trial % 2 else rng.random(n)).astype(np.float32)
        labels = rng.random(n) < 0.4
        labels[0] = True
        assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert np.isnan(average_precision(np.array([0.3, 0.1]), np.array([False, False])))
    maps, masks = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.rand(3, 8, 8) > 0.5
    torch.testing.assert_close(torch.as_tensor(two_channel_average_precision(maps, masks)),
                               torch.tensor([two_channel_ap_by_sklearn(m, g) for m, g in zip(maps, masks)],
                                            dtype=torch.float64))


def test_an_all_foreground_or_all_background_mask_is_counted():
    soft = torch.tensor([[[1.0, 0.5], [0.25, 0.0]]])
    metrics = SegmentationMetrics()
    metrics.update(soft, np.ones((1, 2, 2), dtype=bool))
    # foreground channel all positive (1, .5, .25, 0), background channel all negative (0, .5, .75, 1):
    # 1.0(+ -) P 1/2, 0.75(-), 0.5(+ -) P 2/5, 0.25(+) P 1/2, 0.0(+ -) P 1/2 -> AP (1/2 + 2/5 + 1/2 + 1/2) / 4
    assert metrics.average_precisions == pytest.approx([1.9 / 4])
    metrics.update(soft, np.zeros((1, 2, 2), dtype=bool))
    assert metrics.average_precisions[1] == pytest.approx(two_channel_ap_by_sklearn(soft[0], np.zeros((2, 2))))
    result = metrics.result()
    assert result["n_images"] == 2 and result["map"] == pytest.approx(np.mean(metrics.average_precisions))
    assert result["pixel_accuracy"] == pytest.approx(4 / 8)  # the map's mean 0.4375: 2 foreground pixels each time
    with pytest.raises(InputError, match="differ in shape"):
        metrics.update(torch.rand(1, 3, 3), np.zeros((1, 4, 4), dtype=bool))


def test_a_constant_map_is_background_and_scores_zero_on_both_channels():
    """The paper's code divides 0 by 0 on a constant map and sets the NaNs to 0: every pixel of both channels
    scores 0, so the AP is the share of positives among the 2 H W labels, 1/2."""
    metrics = SegmentationMetrics()
    metrics.update(torch.zeros(1, 2, 2), np.array([[[1, 0], [0, 0]]], dtype=bool))
    result = metrics.result()
    assert result["map"] == pytest.approx(0.5) and result["pixel_accuracy"] == pytest.approx(3 / 4)
    assert result["iou_foreground"] == 0 and result["iou_background"] == pytest.approx(3 / 4)


def test_negative_values_are_clipped_before_the_min_max():
    scores = torch.tensor([[-2.0, 1.0, 3.0, -1.0]])  # the 2 x 2 grid [[-2, 1], [3, -1]], drawn at its own size
    unclipped = segmentation_maps(scores, (2, 2), 2, clip_negative=False)
    clipped = segmentation_maps(scores, (2, 2), 2)
    torch.testing.assert_close(unclipped[0], torch.tensor([[0.0, 0.6], [1.0, 0.2]]))
    torch.testing.assert_close(clipped[0], torch.tensor([[0.0, 1 / 3], [1.0, 0.0]]))
    # the threshold (the map's mean) moves: 1 is foreground unclipped (0.6 > 0.45), not clipped (1/3 = mean)
    assert binarise(unclipped)[0].tolist() == [[False, True], [True, False]]
    assert binarise(clipped)[0].tolist() == [[False, False], [True, False]]
    truth = np.array([[[False, True], [True, False]]])
    by_protocol = {}
    for protocol in (SegmentationProtocol(), SegmentationProtocol(clip_negative=False)):
        metrics = SegmentationMetrics()
        metrics.update(segmentation_maps(scores, (2, 2), 2, clip_negative=protocol.clip_negative), truth)
        by_protocol[protocol.name] = metrics.result()["pixel_accuracy"]
    assert by_protocol == {"paper": 3 / 4, "unclipped": 1.0}
    # every patch negative: clipped, the map is constant -> all 0 (background, both AP channels scored 0)
    assert segmentation_maps(-scores.abs(), (2, 2), 2).abs().max() == 0


def test_maps_are_upsampled_normalised_and_thresholded():
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    maps = scores_to_maps(scores, (2, 2), (4, 4))
    assert maps.shape == (1, 4, 4) and maps.min() == 0 and maps.max() == 1
    assert maps[0, 0, 0] == 0 and maps[0, 3, 3] == 1  # corners keep the patch values (align_corners=False)
    assert binarise(maps)[0].sum() == (maps[0] > maps[0].mean()).sum()
    assert scores_to_maps(torch.ones(1, 4), (2, 2), (4, 4)).abs().max() == 0  # a constant map is all background
    # the upsampling is by the patch size: the same as F.interpolate with scale_factor 2 here
    by_scale = F.interpolate(scores.view(1, 1, 2, 2), scale_factor=2, mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(maps[0], (by_scale - by_scale.min()) / (by_scale.max() - by_scale.min()))
    with pytest.raises(InputError, match="patch grid"):
        scores_to_maps(scores, (3, 3), (4, 4))


def test_mask_geometries_on_a_non_square_mask():
    mask = np.zeros((100, 200), dtype=np.uint8)
    mask[:, 150:] = 1  # the right quarter
    # resize (the paper's): the whole 100 x 200 mask squeezed into 50 x 50, the right quarter stays a quarter
    resized = resized_mask(mask, 50)
    assert resized.shape == (50, 50) and resized[:, :37].sum() == 0 and resized[:, 38:].all()
    # aligned: 100 x 200 -> 50 x 100, centre crop columns 25..74 of 100: the right quarter (75..99) is cut off
    aligned = aligned_mask(mask, 50)
    assert aligned.shape == (50, 50) and aligned.sum() == 0
    half = np.zeros((100, 200), dtype=np.uint8)
    half[:, 100:] = 1  # the right half: columns 25.. of both (50..74 of the resized 100 in the crop)
    assert aligned_mask(half, 50)[:, 25:].all() and aligned_mask(half, 50)[:, :25].sum() == 0
    assert (input_mask(mask, 50, "resize") == resized).all() and (input_mask(mask, 50, "aligned") == aligned).all()
    square = np.zeros((60, 60), dtype=bool)
    square[10:40, 20:50] = True  # on a square mask both geometries agree
    assert (resized_mask(square, 30) == aligned_mask(square, 30)).all()
    with pytest.raises(InputError, match="unknown mask geometry 'crop'"):
        input_mask(mask, 50, "crop")


def test_segmentation_protocols_and_their_errors():
    paper = SegmentationProtocol()
    assert (paper.mask_geometry, paper.clip_negative, paper.name) == ("resize", True, "paper")
    assert [p.name for p in paper.with_single_alternatives()] == ["paper", "aligned_masks", "unclipped"]
    aligned = SegmentationProtocol(mask_geometry="aligned")
    assert [p.name for p in aligned.with_single_alternatives()] == ["aligned_masks", "paper",
                                                                    "aligned_masks_unclipped"]
    assert "resized to the input square" in paper.description and "unclipped" in SegmentationProtocol(
        clip_negative=False).description
    with pytest.raises(InputError, match=r"`decomposition.segmentation.mask_geometry` is 'crop'; allowed: "
                                         r"'resize' or 'aligned'"):
        SegmentationProtocol(mask_geometry="crop")
    with pytest.raises(InputError, match=r"`decomposition.segmentation.clip_negative` is 'yes'; allowed: true or "):
        SegmentationProtocol(clip_negative="yes")


def test_mask_geometry_matches_the_image_preprocessing(tiny_clip):
    """A mask drawn where the image is white lands, aligned, where the preprocessed image is white."""
    from PIL import Image

    image = np.zeros((90, 130, 3), dtype=np.uint8)
    image[20:70, 30:60] = 255
    pixels = tiny_clip.preprocess(Image.fromarray(image))
    white = pixels.mean(0) > pixels.mean()
    mask = aligned_mask(image[..., 0] > 0, tiny_clip.image_size)
    assert (torch.as_tensor(mask) == white).float().mean() > 0.97  # up to the bicubic edge
    resized = resized_mask(image[..., 0] > 0, tiny_clip.image_size)
    assert (torch.as_tensor(resized) == white).float().mean() < 0.97  # squeezed: off the cropped pixels


def non_square_items(n=3):
    rng = np.random.default_rng(0)
    items = []
    for k in range(n):
        image = rng.integers(0, 255, (70, 100), dtype=np.uint8)[..., None].repeat(3, axis=2)
        mask = np.zeros((70, 100), dtype=bool)
        mask[10:60, 5 + 10 * k:45 + 10 * k] = True
        items.append((image, mask))
    return items


def test_segmentation_evaluation_over_items(tiny_clip, classifier, one_thread):
    from clip_interp.decomposition.segmentation import METHODS, evaluate_segmentation, model_pixels

    items = non_square_items()
    table = evaluate_segmentation(tiny_clip, items, classifier, batch_size=2)
    assert table["protocol"].tolist() == [p for p in ("paper", "aligned_masks", "unclipped") for _ in METHODS]
    assert table["method"].tolist() == list(METHODS) * 3 and (table["n_images"] == 3).all()
    assert table["configured"].tolist() == [True] * 3 + [False] * 6
    scores = table[["pixel_accuracy", "iou_background", "iou_foreground", "miou", "map"]]
    assert ((scores >= 0) & (scores <= 1)).all().all()
    rows = table.set_index(["protocol", "method"])
    # attention is positive: clipping changes nothing for the two baselines
    for method in ("last_layer_attention", "attention_rollout"):
        assert rows.loc[("unclipped", method), "map"] == pytest.approx(rows.loc[("paper", method), "map"])
    # each protocol's rows against a direct computation over the same batches
    size, grid = tiny_clip.image_size, tiny_clip.vision.grid_size
    for protocol in SegmentationProtocol().with_single_alternatives():
        metrics = SegmentationMetrics()
        for batch in (items[:2], items[2:]):
            pixels = model_pixels(tiny_clip, [image for image, _ in batch])
            maps = segmentation_maps(method_scores("decomposition", tiny_clip.vision, pixels, classifier), grid,
                                     size, clip_negative=protocol.clip_negative)
            metrics.update(maps, np.stack([input_mask(mask, size, protocol.mask_geometry) for _, mask in batch]))
        expected = metrics.result()
        for key in ("pixel_accuracy", "miou", "map"):
            assert rows.loc[(protocol.name, "decomposition"), key] == pytest.approx(expected[key], abs=1e-9), key
    assert rows.loc[("paper", "decomposition"), "pixel_accuracy"] != rows.loc[("aligned_masks", "decomposition"),
                                                                             "pixel_accuracy"]
    aligned = evaluate_segmentation(tiny_clip, items, classifier, methods=["last_layer_attention"],
                                    protocol=SegmentationProtocol(mask_geometry="aligned"))
    assert aligned["protocol"].tolist() == ["aligned_masks", "paper", "aligned_masks_unclipped"]
    assert aligned.loc[1, "map"] == pytest.approx(rows.loc[("paper", "last_layer_attention"), "map"])


def test_example_panels_follow_the_configured_protocol(tiny_clip, classifier, one_thread):
    import pandas as pd

    from clip_interp.decomposition.segmentation import configured_rows, example_panels

    items = non_square_items(2)
    size = tiny_clip.image_size
    shown, masks, maps = example_panels(tiny_clip, items, classifier, ["decomposition"])
    assert shown[0].shape == (size, size, 3) and len(maps["decomposition"]) == 2
    assert (masks[1] == resized_mask(items[1][1], size)).all()
    aligned = example_panels(tiny_clip, items, classifier, ["decomposition"],
                             protocol=SegmentationProtocol(mask_geometry="aligned", clip_negative=False))
    assert (aligned[1][1] == aligned_mask(items[1][1], size)).all()
    assert min(m.min() for m in aligned[2]["decomposition"]) == 0 and max(m.max() for m in maps["decomposition"]) == 1
    table = pd.DataFrame({"method": ["a", "a"], "configured": [True, False], "miou": [0.1, 0.2]})
    assert configured_rows(table)["miou"].tolist() == [0.1]
    assert len(configured_rows(table.drop(columns="configured"))) == 2


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
