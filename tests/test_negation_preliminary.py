"""Subject sizes (CLIPSeg and masks) and the preliminary analyses obey their definitions."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from clip_interp.errors import InputError
from clip_interp.negation import preliminary as P
from clip_interp.negation import subject_size as S
from clip_interp.plotting import save_figure

pytestmark = pytest.mark.usefixtures("one_thread")


def _hf_clip_tokenizer():
    """A transformers CLIPTokenizer with CLIP's BPE vocabulary, built offline from open_clip's bundled file."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    bpe = SimpleTokenizer()
    renamed = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {renamed.get(token, token): index for token, index in bpe.encoder.items()}
    merges = [pair for pair, _ in sorted(bpe.bpe_ranks.items(), key=lambda item: item[1])]
    return CLIPTokenizer(vocab=vocab, merges=merges)


@pytest.fixture(scope="module")
def clipseg_dir(tmp_path_factory):
    """A random-init CLIPSeg with tiny towers and its processor, saved with save_pretrained."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessor

    config = CLIPSegConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "vocab_size": 49408, "max_position_embeddings": 77},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16, reduce_dim=8, extract_layers=[0, 1], decoder_num_attention_heads=2,
        decoder_intermediate_size=16,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clipseg") / "tiny-clipseg"
    CLIPSegForImageSegmentation(config).save_pretrained(folder)
    image_processor = ViTImageProcessor(
        size={"height": 32, "width": 32},
        image_mean=list(OPENAI_DATASET_MEAN),
        image_std=list(OPENAI_DATASET_STD),
    )
    CLIPSegProcessor(image_processor=image_processor, tokenizer=_hf_clip_tokenizer()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clipseg(clipseg_dir):
    return S.load_clipseg(str(clipseg_dir), "cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(40, 40), (48, 32), (32, 56), (40, 40)]):
        path = folder / f"img_{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


PROMPTS = ["dogs", "red circles", "floor grates", "a man"]


def _probabilities(clipseg, path, prompt):
    processor, model = clipseg
    inputs = processor(text=[prompt], images=[Image.open(path).convert("RGB")], return_tensors="pt")
    with torch.no_grad():
        return torch.sigmoid(model(**inputs).logits).flatten().numpy()


# --- CLIPSeg ---------------------------------------------------------------------------------------------------


def test_clipseg_sizes_follow_the_definitions(clipseg, images):
    relative, binary = S.clipseg_sizes(*clipseg, images, PROMPTS, threshold=0.5, batch_size=3, progress=False)
    assert relative.shape == binary.shape == (4,)
    assert np.all((relative >= 0) & (relative <= 1)) and np.all((binary >= 0) & (binary <= 1))
    for i, (path, prompt) in enumerate(zip(images, PROMPTS)):
        p = _probabilities(clipseg, path, prompt)
        assert relative[i] == pytest.approx(p.mean(), abs=1e-5)
        assert binary[i] == pytest.approx((p > 0.5).mean(), abs=1e-9)


def test_clipseg_sizes_do_not_depend_on_batching_or_order(clipseg, images):
    one, one_bin = S.clipseg_sizes(*clipseg, images, PROMPTS, threshold=0.5, batch_size=1, progress=False)
    four, four_bin = S.clipseg_sizes(*clipseg, images, PROMPTS, threshold=0.5, batch_size=4, progress=False)
    np.testing.assert_allclose(one, four, atol=1e-5)
    np.testing.assert_array_equal(one_bin, four_bin)
    order = [2, 0, 3, 1]
    shuffled, _ = S.clipseg_sizes(*clipseg, [images[i] for i in order], [PROMPTS[i] for i in order], threshold=0.5,
                                  batch_size=3, progress=False)
    np.testing.assert_allclose(shuffled, one[order], atol=1e-5)


def test_binary_size_is_monotone_in_the_threshold(clipseg, images):
    shares = [S.clipseg_sizes(*clipseg, images[:2], PROMPTS[:2], threshold=t, batch_size=2, progress=False)[1]
              for t in (0.0, 0.3, 0.6, 1.0)]
    np.testing.assert_array_equal(shares[0], 1.0)
    np.testing.assert_array_equal(shares[-1], 0.0)
    assert np.all(np.diff(np.stack(shares), axis=0) <= 0)


def test_clipseg_rejects_bad_threshold_and_missing_image(clipseg, images, tmp_path):
    with pytest.raises(InputError, match="threshold"):
        S.clipseg_sizes(*clipseg, images[:1], PROMPTS[:1], threshold=1.5, progress=False)
    with pytest.raises(InputError, match="missing.png"):
        S.clipseg_sizes(*clipseg, [str(tmp_path / "missing.png")], ["dogs"], threshold=0.5, progress=False)


def test_clipseg_names_a_truncated_image_and_its_key(clipseg, images, tmp_path):
    truncated = tmp_path / "truncated.png"
    data = Path(images[0]).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"truncated\.png \(instance 'k2'\) cannot be read"):
        S.clipseg_sizes(*clipseg, [images[1], str(truncated)], ["dogs", "cats"], ["k1", "k2"], threshold=0.5,
                        progress=False)


def test_local_folder_versus_hub_id(tmp_path):
    assert not S.is_local_path("CIDAS/clipseg-rd64-refined")
    for path in ("/no/such/folder", "./clipseg", "results/models/clipseg", "~/clipseg", "models/clipseg/"):
        assert S.is_local_path(path)
    assert S.is_local_path(str(tmp_path))


def test_missing_or_incomplete_model_folder_is_an_input_error(tmp_path):
    missing = tmp_path / "not-there"
    with pytest.raises(InputError, match="not-there.*does not exist"):
        S.load_clipseg(str(missing))
    with pytest.raises(InputError, match="no config.json"):
        S.load_clipseg(str(tmp_path))


# --- masks -------------------------------------------------------------------------------------------------------


def _mask(path, shape, n_on):
    """Write a greyscale mask: 255 at the first ``n_on`` flat indices, 100 (below the level) at the next 5."""
    values = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    values[:n_on] = 255
    values[n_on:n_on + 5] = 100
    Image.fromarray(values.reshape(shape)).save(path)
    return path


def test_mask_share_counts_subject_pixels(tmp_path):
    path = _mask(tmp_path / "m.png", (10, 20), 37)
    assert S.mask_share(path) == pytest.approx(37 / 200)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "empty.png")
    assert S.mask_share(tmp_path / "empty.png") == 0.0


def test_missing_mask_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="nope_mask.png"):
        S.mask_share(tmp_path / "nope_mask.png")


def _benchmark(tmp_path, entries):
    (tmp_path / "masks").mkdir(exist_ok=True)
    (tmp_path / "existence.json").write_text(json.dumps(entries))
    return tmp_path / "existence.json", tmp_path / "masks"


def test_true_sizes_checks_the_benchmark(tmp_path):
    valse, masks = _benchmark(tmp_path, {"a": {"mask_file": "a.png", "relative_size": 0.25},
                                         "b": {"mask_file": "b.png", "relative_size": 0.5},
                                         "c": {"image_file": "c.png"}})
    _mask(masks / "a.png", (4, 4), 4)
    _mask(masks / "b.png", (4, 4), 4)
    np.testing.assert_allclose(S.true_sizes(["a"], valse, masks), [0.25])
    with pytest.raises(InputError, match="'b'.*differs"):
        S.true_sizes(["b"], valse, masks)
    with pytest.raises(InputError, match="'c'.*no 'mask_file'"):
        S.true_sizes(["c"], valse, masks)
    with pytest.raises(InputError, match="'z' is not in"):
        S.true_sizes(["z"], valse, masks)
    with pytest.raises(InputError, match="does not exist"):
        S.true_sizes(["a"], tmp_path / "other.json", masks)


DATASET = pd.DataFrame({
    "key": ["dog", "people", "pronoun", "cats", "no_negator"],
    "negation": ["foil", "caption", "foil", "foil", "foil"],
    "negated": ["There is no dog.", "There are no people.", "There are no of his feet in the picture.",
                "There are no black cats.", "There is a dog."],
    "image_file": ["dog.png", "people.png", "pronoun.png", "cats.png", "dog.png"],
})


def _dataset_masks(tmp_path, shares):
    entries = {}
    (tmp_path / "masks").mkdir(exist_ok=True)
    for key, share in shares.items():
        _mask(tmp_path / "masks" / f"{key}.png", (10, 10), round(share * 100))
        entries[key] = {"mask_file": f"{key}.png", "relative_size": share}
    return _benchmark(tmp_path, entries)


def test_mask_source_table_counts_every_unsized_instance(tmp_path, nlp):
    valse, masks = _dataset_masks(tmp_path, {"dog": 0.3, "people": 0.0, "pronoun": 0.1, "cats": 0.07,
                                             "no_negator": 0.2})
    table, info = S.subject_size_table(DATASET, nlp, source="mask", threshold=0.25, valse_json=valse,
                                       masks_dir=masks)
    assert table["key"].tolist() == DATASET["key"].tolist()
    assert table["status"].tolist() == ["sized", "negation_in_caption", "empty_subject", "sized", "no_negator"]
    assert table["subject"].tolist() == ["dog", "people", "", "black cats", ""]
    np.testing.assert_allclose(table["relative_size"], [0.3, np.nan, np.nan, 0.07, np.nan])
    np.testing.assert_allclose(table["binary_size"], table["relative_size"])
    np.testing.assert_allclose(table["true_relative_size"], table["relative_size"])
    assert info["counts"] == {"n_instances": 5, "n_sized": 2, "n_negation_in_caption": 1, "n_negation_in_foil": 4,
                              "n_empty_subject": 1, "n_no_negator": 1}
    assert info["empty_subject_keys"] == ["pronoun"] and info["no_negator_keys"] == ["no_negator"]


def test_clipseg_source_table_maps_sizes_to_their_rows(tmp_path, nlp):
    calls = []

    def fake_clipseg(paths, prompts, keys):
        calls.append((paths, prompts))
        return np.array([len(p) / 100 for p in prompts]), np.array([len(p) / 200 for p in prompts])

    valse, masks = _dataset_masks(tmp_path, {"dog": 0.03, "cats": 0.10})
    table, info = S.subject_size_table(DATASET, nlp, source="clipseg", threshold=0.25, clipseg=fake_clipseg,
                                       images_dir=tmp_path / "img", valse_json=valse, masks_dir=masks)
    assert calls == [([str(tmp_path / "img" / "dog.png"), str(tmp_path / "img" / "cats.png")], ["dog", "black cats"])]
    np.testing.assert_allclose(table["relative_size"], [0.03, np.nan, np.nan, 0.10, np.nan])
    np.testing.assert_allclose(table["binary_size"], [0.015, np.nan, np.nan, 0.05, np.nan])
    np.testing.assert_allclose(table["true_relative_size"], [0.03, np.nan, np.nan, 0.10, np.nan])
    assert set(table["source"]) == {"clipseg"} and info["has_true_masks"]
    agreement = S.size_agreement(table)
    assert agreement["relative_size"]["n"] == 2 and agreement["relative_size"]["pearson"] is None
    assert agreement["relative_size"]["mean_abs_error"] == pytest.approx(0.0)


def test_clipseg_end_to_end_through_the_table(clipseg, images, nlp, tmp_path):
    dataset = pd.DataFrame({"key": ["a", "b", "c"], "negation": ["foil", "caption", "foil"],
                            "negated": ["There are no dogs.", "There is no cat.", "There is no red circle."],
                            "image_file": [images[0], images[1], images[2]]})
    table, _ = S.subject_size_table(
        dataset, nlp, source="clipseg", threshold=0.5, images_dir="/",
        clipseg=lambda paths, prompts, keys: S.clipseg_sizes(*clipseg, paths, prompts, keys, threshold=0.5,
                                                             progress=False))
    direct = [_probabilities(clipseg, images[i], prompt).mean() for i, prompt in ((0, "dogs"), (2, "red circle"))]
    np.testing.assert_allclose(table["relative_size"].to_numpy()[[0, 2]], direct, atol=1e-5)
    assert np.isnan(table["relative_size"].iloc[1]) and np.isnan(table["true_relative_size"]).all()


def test_size_table_input_errors(nlp):
    with pytest.raises(InputError, match="source is 'masks'"):
        S.subject_size_table(DATASET, nlp, source="masks", threshold=0.25)
    with pytest.raises(InputError, match="no benchmark file with subject masks"):
        S.subject_size_table(DATASET, nlp, source="mask", threshold=0.25)
    with pytest.raises(InputError, match=r"lacks columns \['negated'\]"):
        S.subject_size_table(DATASET.drop(columns="negated"), nlp, source="mask", threshold=0.25)
    with pytest.raises(InputError, match="'both'"):
        S.subject_size_table(DATASET.assign(negation="both"), nlp, source="mask", threshold=0.25)


# --- preliminary analyses ------------------------------------------------------------------------------------------


def _positions(keys, negation, caption, neg_lengths, non_lengths, negator, further, ok):
    rows = []
    for k, side, cap, n_neg, n_non, pos, fur, good in zip(keys, negation, caption, neg_lengths, non_lengths, negator,
                                                          further, ok):
        neg_ids, non_ids = list(range(n_neg)), list(range(100, 100 + n_non))
        rows.append({"key": k, "negation": side, "caption": cap, "foil": f"foil of {k}", "negated_ids": neg_ids,
                     "non_negated_ids": non_ids, "caption_ids": neg_ids if side == "caption" else non_ids,
                     "foil_ids": non_ids if side == "caption" else neg_ids, "negator_pos": pos if good else -1,
                     "n_further_subject": fur if good else -1, "positions_ok": good})
    return pd.DataFrame(rows)


@pytest.fixture
def case():
    keys = ["k0", "k1", "k2", "k3", "k4"]
    negation = ["caption", "foil", "foil", "caption", "foil"]
    positions = _positions(keys, negation, ["There are no people.", "c1", "c2", "There are no people.", "c4"],
                           [8, 9, 10, 8, 11], [7, 8, 10, 7, 9], [3, 3, 4, 3, 5], [0, 1, 2, 0, 3],
                           [True, True, True, True, False])
    d = np.array([1.5, -0.5, 2.0, 0.1, 3.0])
    scores = pd.DataFrame({"key": keys, "negation": negation, "d": d, "correct": d > 0,
                           "segment": ["correct", "ambiguous", "correct", "ambiguous", "correct"]})
    cache_keys = ["k3", "k1", "k4", "k0", "k2"]
    cosine = np.array([0.3, 0.1, 0.4, 0.0, 0.2])
    sizes = pd.DataFrame({"key": ["k2", "k1", "k0", "k3"], "relative_size": [0.2, 0.1, np.nan, np.nan],
                          "binary_size": [0.25, 0.15, np.nan, np.nan]})
    return scores, positions[::-1].reset_index(drop=True), cache_keys, cosine, sizes


def test_pairwise_cosine():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    expected = [x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)]
    np.testing.assert_allclose(P.pairwise_cosine(a, b), expected)
    np.testing.assert_allclose(P.pairwise_cosine(3 * a, b), P.pairwise_cosine(b, a))
    with pytest.raises(InputError, match="one shape"):
        P.pairwise_cosine(a, b[:, :3])
    with pytest.raises(InputError, match="all zeros"):
        P.pairwise_cosine(np.zeros((1, 3)), np.ones((1, 3)))


def test_instance_table_aligns_every_source_by_key(case):
    table, counts = P.instance_table(*case)
    assert table.columns.tolist() == P.INSTANCE_COLUMNS
    assert table["key"].tolist() == ["k0", "k1", "k2", "k3", "k4"]
    assert table["seq_len_negated"].tolist() == [8, 9, 10, 8, 11]
    assert table["seq_len"].tolist() == table["caption_len"].tolist()  # the study's length: the caption's tokens
    assert table["caption_len"].tolist() == [8, 8, 10, 8, 9]
    assert table["foil_len"].tolist() == [7, 9, 10, 7, 11]
    assert table["negator_pos"].tolist()[:4] == [3, 3, 4, 3] and pd.isna(table["negator_pos"].iloc[4])
    assert table["subject_len"].tolist()[:4] == [1, 2, 3, 1] and pd.isna(table["subject_len"].iloc[4])
    np.testing.assert_allclose(table["cosine_similarity"], [0.0, 0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(table["relative_size"], [np.nan, 0.1, 0.2, np.nan, np.nan])
    np.testing.assert_allclose(table["binary_size"], [np.nan, 0.15, 0.25, np.nan, np.nan])
    np.testing.assert_allclose(table["d"], [1.5, -0.5, 2.0, 0.1, 3.0])
    assert counts == {"n_instances": 5, "n_negation_in_caption": 2, "n_negation_in_foil": 3, "n_positions_failed": 1,
                      "n_missing_from_size_table": 1, "n_foil_with_size": 2}


def test_instance_table_without_sizes(case):
    scores, positions, cache_keys, cosine, _ = case
    table, counts = P.instance_table(scores, positions, cache_keys, cosine, None)
    assert table["relative_size"].isna().all() and counts["n_missing_from_size_table"] == 5


def test_instance_table_input_errors(case):
    scores, positions, cache_keys, cosine, sizes = case
    with pytest.raises(InputError, match="not in the positions table"):
        P.instance_table(scores, positions[positions.key != "k2"], cache_keys, cosine, sizes)
    flipped = positions.assign(negation=positions["negation"].where(positions.key != "k1", "caption"))
    with pytest.raises(InputError, match="different negation side.*'k1'"):
        P.instance_table(scores, flipped, cache_keys, cosine, sizes)
    with pytest.raises(InputError, match="not in the text cache"):
        P.instance_table(scores, positions, cache_keys[:4], cosine[:4], sizes)
    with pytest.raises(InputError, match="4 cached keys but 5"):
        P.instance_table(scores, positions, cache_keys[:4], cosine, sizes)
    with pytest.raises(InputError, match="repeated keys"):
        P.instance_table(pd.concat([scores, scores]), positions, cache_keys, cosine, sizes)
    with pytest.raises(InputError, match=r"lacks columns \['segment'\]"):
        P.instance_table(scores.drop(columns="segment"), positions, cache_keys, cosine, sizes)


def _random_instances(n=60, seed=0):
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({
        "negation": np.where(np.arange(n) % 3 == 0, "caption", "foil"),
        "negator_pos": rng.integers(3, 8, n), "subject_len": rng.integers(1, 4, n),
        "seq_len": rng.integers(7, 15, n), "relative_size": rng.uniform(0, 0.5, n),
        "cosine_similarity": rng.uniform(0.6, 1.0, n), "d": rng.normal(size=n),
    })
    table["binary_size"] = table["relative_size"] + rng.normal(scale=0.05, size=n)
    table.loc[table["negation"] == "caption", ["relative_size", "binary_size"]] = np.nan
    table["correct"] = table["d"] > 0
    return table


def test_pairwise_correlation_table_pools_both_sides_where_both_exist():
    instances = _random_instances()
    instances.loc[instances.index[1], "relative_size"] = np.nan
    table = P.pairwise_correlation_table(instances).set_index(["variable_x", "variable_y"])
    n_caption, n_foil = (instances.negation == "caption").sum(), (instances.negation == "foil").sum()
    sim_score = table.loc[("cosine_similarity", "d")]
    assert (sim_score.n, sim_score.n_caption, sim_score.n_foil) == (len(instances), n_caption, n_foil)
    assert sim_score.r == pytest.approx(np.corrcoef(instances.cosine_similarity, instances.d)[0, 1])
    size_score = table.loc[("relative_size", "d")]
    assert (size_score.n, size_score.n_caption) == (n_foil - 1, 0)
    with_size = instances.dropna(subset=["relative_size"])
    assert size_score.r == pytest.approx(np.corrcoef(with_size.relative_size, with_size.d)[0, 1])
    assert table.loc[("d", "relative_size")].r == size_score.r
    assert table.loc[("d", "d")].r == pytest.approx(1.0)
    # The pooled cell differs from the foil-only matrix, which drops the caption side.
    foil_only = P.correlation_table(instances)[0].set_index("variable")
    assert sim_score.r != pytest.approx(foil_only.loc["cosine_similarity", "d"])


def test_length_accuracy_counts_instances_up_to_each_length():
    instances = pd.DataFrame({"negation": ["caption", "caption", "foil", "foil", "foil"],
                              "seq_len": [7, 9, 7, 8, 9], "correct": [True, False, False, True, True]})
    table = P.length_accuracy(instances).set_index(["negation", "max_seq_len"])
    assert table.loc[("caption", 7)].tolist() == [1, 2, 0.5, 1.0]
    assert table.loc[("foil", 8)].tolist() == [2, 3, pytest.approx(2 / 3), 0.5]
    assert table.loc[("all", 9)].tolist() == [5, 5, 1.0, 0.6]


def test_size_accuracy_reports_share_removed_and_accuracy_kept():
    instances = pd.DataFrame({"negation": ["foil"] * 4 + ["caption"],
                              "relative_size": [0.05, 0.1, 0.3, np.nan, np.nan],
                              "binary_size": [0.0, 0.2, 0.5, 0.7, np.nan],
                              "correct": [False, True, False, True, True]})
    table = P.size_accuracy(instances, 0.1).set_index("size")
    rel = table.loc["relative_size"]
    assert (rel.n_total, rel.n_kept) == (3, 2)
    assert rel.share_removed == pytest.approx(1 / 3) and rel.accuracy_kept == 0.5
    assert rel.accuracy_all == pytest.approx(1 / 3)
    assert table.loc["binary_size"].n_kept == 3 and table.loc["binary_size"].accuracy_kept == pytest.approx(2 / 3)


def test_repeated_caption_similarity():
    instances = pd.DataFrame({"caption": ["There are no people.", " There are no people. ", "A dog."],
                              "cosine_similarity": [0.9, 0.92, 0.5]})
    assert P.repeated_caption_similarity(instances) == {"caption": "There are no people.", "n": 2,
                                                        "mean_cosine": pytest.approx(0.91)}


def test_correlation_table_is_pearson_over_complete_foil_cases():
    instances = _random_instances()
    instances.loc[instances.index[1], "relative_size"] = np.nan
    table, info = P.correlation_table(instances)
    variables = list(P.TABLE3_VARIABLES)
    matrix = table[variables].to_numpy()
    np.testing.assert_allclose(matrix, matrix.T)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    assert table["variable"].tolist() == variables
    foil = instances[instances.negation == "foil"]
    complete = foil[variables].dropna()
    assert info["n"] == len(complete) == len(foil) - 1 and set(table["n"]) == {len(complete)}
    np.testing.assert_allclose(matrix, complete.corr().to_numpy(), atol=1e-12)
    shifted = instances.copy()
    shifted.loc[shifted.negation == "caption", "d"] += 100.0
    np.testing.assert_allclose(P.correlation_table(shifted)[0][variables].to_numpy(), matrix)


def test_correlation_table_marks_constant_variables():
    instances = _random_instances().assign(negator_pos=3)
    table, info = P.correlation_table(instances)
    assert info["constant_variables"] == ["negator_pos"]
    assert table.set_index("variable")["negator_pos"].isna().all()
    assert table.set_index("variable").loc["negator_pos"].drop("n").isna().all()
    with pytest.raises(InputError, match="lacks columns"):
        P.correlation_table(instances.drop(columns="d"))


def test_pearson_edge_cases():
    assert np.isnan(P.pearson([1, 2], [2, 3])[0])
    assert np.isnan(P.pearson([1, 1, 1, 1], [1, 2, 3, 4])[0])
    assert P.pearson([1, 2, 3, np.nan], [2, 4, 6, 0])[0] == pytest.approx(1.0)


def test_accuracy_at_least_matches_brute_force():
    rng = np.random.default_rng(1)
    size = np.round(rng.uniform(0, 1, 50), 1)
    size[3] = np.nan
    correct = rng.uniform(size=50) < 0.6
    thresholds = np.array([-1.0, 0.0, 0.25, 0.5, 0.9, 1.0, 2.0])
    share, n = P.accuracy_at_least(size, correct, thresholds)
    for t, s, m in zip(thresholds, share, n):
        chosen = np.isfinite(size) & (size >= t)
        assert m == chosen.sum()
        assert (np.isnan(s) and m == 0) or s == pytest.approx(correct[chosen].mean())
    assert n[0] == 49


def test_figures_render(case, tmp_path):
    table, _ = P.instance_table(*case)
    save_figure(P.plot_similarity_vs_score(table, "tiny"), [tmp_path / "fig6.png"])
    save_figure(P.plot_subject_size(table, "tiny", min_count=1), [tmp_path / "fig7.png"])
    assert (tmp_path / "fig6.png").stat().st_size > 0 and (tmp_path / "fig7.png").stat().st_size > 0
