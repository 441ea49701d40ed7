"""The follow-up experiments: set and block-output patches, ablation windows, pair patching, MHA/MLP tracing,
probes and image covariates obey their definitions' invariants and equal direct hooked forwards."""

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from clip_interp.config import config_problems
from clip_interp.errors import InputError
from clip_interp.interventions import (
    block_output_patch_values,
    iter_resid_patches,
    iter_resid_set_patches,
    replace_block_output_windows,
    replace_block_outputs,
)
from clip_interp.models import layer_index, patch_positions
from clip_interp.negation.ablation_windows import (
    layer_windows,
    window_ablation_effects_from_activations,
    window_summary,
)
from clip_interp.negation.caches import write_text_cache
from clip_interp.negation.causal_tracing import causal_tracing_effects
from clip_interp.negation.covariates import covariate_table, fit_model, image_statistics
from clip_interp.negation.image_ablation import image_ablation_activations, image_ablation_effects_from_activations
from clip_interp.negation.pair_patching import (
    PAIR_LABELS,
    pair_comparison,
    pair_patching_effects,
    pair_summary,
    slot_positions,
)
from clip_interp.negation.positions import generic_slot_positions, with_generic_positions
from clip_interp.negation.probes import probe_features, probe_features_from_cache, probe_table, swapped_labels
from clip_interp.negation.site_tracing import site_tracing_effects
from clip_interp.negation.tracing_kernel import clean_pair_run, tracing_instances

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _inference_mode():
    """The engine returns inference tensors; the direct hooked forwards that check it run in the same mode."""
    with torch.inference_mode():
        yield
TOL = 1e-4
PAIRS = pd.DataFrame({
    "key": ["dog", "people", "cars"],
    "negation": ["foil", "caption", "foil"],
    "negated": ["There is no dog.", "There are no people in the picture.", "There are no cars."],
    "non_negated": ["There is a dog.", "There are some people in the picture.", "There are some cars."],
})
NOUNS = ["dog", "cat", "car", "tree", "bird", "horse", "boat", "house", "clock", "chair", "table", "lamp", "book",
         "cup", "plate", "bike", "train", "bus", "truck", "plane", "apple", "banana", "cake", "pizza", "phone",
         "kite", "ball", "hat", "shoe", "bag", "door", "window", "fence", "bench", "sign", "flower", "cow", "sheep",
         "bear", "zebra"]


def generic_instances(model, pairs: pd.DataFrame) -> pd.DataFrame:
    """Tracing instances of "There is/are no SUBJECT ... ." pairs with the positions table's generic columns."""
    return with_generic_positions(tracing_instances(model, pairs))


@pytest.fixture(scope="module")
def case(tiny_clip):
    instances = generic_instances(tiny_clip, PAIRS)
    image_emb = torch.randn(len(PAIRS), tiny_clip.text.proj.shape[1], generator=torch.Generator().manual_seed(1))
    return tiny_clip, instances, image_emb


def clean_streams(model, instances):
    """The clean text run of a batch of one length: negated rows first, then non-negated (as the engine runs it)."""
    neg, non = instances["negated_ids"].tolist(), instances["non_negated_ids"].tolist()
    eot = instances["eot_pos"].to_numpy().copy()
    return clean_pair_run(model, neg, non, eot, ["resid", "resid_mid", "attn_out", "mlp_out"]), len(neg), eot


# --------------------------------------------------------------------------- generic engine


def test_set_patch_of_one_position_plus_a_no_op_position_equals_the_single_patch(case):
    model, instances, _ = case
    part = instances.iloc[[0, 2]]  # the same token length
    clean, b, eot = clean_streams(model, part)
    resid = clean.cache.stack("resid")
    pool = torch.as_tensor(eot)
    t = int(eot.max()) + 1
    single = torch.zeros(b, t, dtype=torch.bool)
    single[:, 4] = True
    singles = {p.position: p.embeddings for p in iter_resid_patches(model.text, resid[b:], resid[:b], single, pool)}
    sets = torch.zeros(b, 3, t, dtype=torch.bool)
    sets[:, 0, 4] = True
    sets[:, 1, [1, 4]] = True  # position 1 ("There") is identical in both sentences: a no-op
    sets[:, 2, [0, 1]] = True  # only identical positions
    got = {p.index: p.embeddings for p in iter_resid_set_patches(model.text, resid[b:], resid[:b], sets, pool)}
    torch.testing.assert_close(got[0], singles[4], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1], singles[4], atol=1e-5, rtol=0)
    receiver = clean.embedding[b:]
    torch.testing.assert_close(got[2], receiver.expand_as(got[2]), atol=1e-5, rtol=0)


def test_set_patch_equals_a_hooked_forward(case):
    model, instances, _ = case
    part = instances.iloc[[1]]
    clean, b, eot = clean_streams(model, part)
    resid = clean.cache.stack("resid")
    sets = torch.zeros(1, 1, int(eot[0]) + 1, dtype=torch.bool)
    positions = [3, 6, 9]
    sets[0, 0, positions] = True
    (patched,) = iter_resid_set_patches(model.text, resid[b:], resid[:b], sets, torch.as_tensor(eot))
    ids = model.tokenizer.pad(part["non_negated_ids"].tolist(), int(eot[0]) + 1)
    for layer in range(model.text.n_layers):
        hook = patch_positions(resid[0, layer, positions], [0] * len(positions), positions)
        direct = model.text.run(ids, hooks={("resid", layer): hook}).embedding
        torch.testing.assert_close(patched.embeddings[layer], direct, atol=1e-5, rtol=0)


def test_extension_sets_resume_from_their_base_run_exactly(case):
    model, instances, _ = case
    part = instances.iloc[[0, 2]]  # one token length, so one batch
    clean, b, eot = clean_streams(model, part)
    resid = clean.cache.stack("resid")
    pool = torch.as_tensor(eot)
    sets = torch.zeros(b, 3, int(eot.max()) + 1, dtype=torch.bool)
    for row, (first, extras) in enumerate([(3, ([5], [4])), (4, ([6], [5, 6]))]):  # bases at different positions
        sets[row, :, first] = True
        sets[row, 1, extras[0]] = True
        sets[row, 2, extras[1]] = True
    independent = {p.index: p.embeddings for p in iter_resid_set_patches(model.text, resid[b:], resid[:b], sets, pool)}
    resumed = {p.index: p.embeddings
               for p in iter_resid_set_patches(model.text, resid[b:], resid[:b], sets, pool, base=[None, 0, 0])}
    assert set(resumed) == {0, 1, 2}
    for index, emb in independent.items():
        torch.testing.assert_close(resumed[index], emb, atol=1e-5, rtol=0)
    not_after = sets.clone()
    not_after[0, 1, 2] = True  # position 2 lies before the base's position 3
    with pytest.raises(ValueError, match="does not extend"):
        list(iter_resid_set_patches(model.text, resid[b:], resid[:b], not_after, pool, base=[None, 0, 0]))
    with pytest.raises(ValueError, match="base must give"):
        list(iter_resid_set_patches(model.text, resid[b:], resid[:b], sets, pool, base=[None, 0, 1]))


@pytest.mark.parametrize("site", ["attn_out", "mlp_out"])
def test_block_output_patch_equals_a_hooked_forward(case, site):
    model, instances, _ = case
    part = instances.iloc[[1]]
    clean, b, eot = clean_streams(model, part)
    receiver = {"resid": clean.cache.stack("resid")[b:], "resid_mid": clean.cache.stack("resid_mid")[b:]}
    donor = clean.cache.stack(site)[:b]
    values = block_output_patch_values(model.text, site, receiver, donor)
    t = int(eot[0]) + 1
    mask = torch.zeros(1, t, dtype=torch.bool)
    mask[0, 3:] = True
    ids = model.tokenizer.pad(part["non_negated_ids"].tolist(), t)
    for patched in iter_resid_patches(model.text, receiver["resid"], values, mask, torch.as_tensor(eot), first_layer=1):
        for k, layer in enumerate(range(1, model.text.n_layers)):
            p = patched.position
            hook = patch_positions(donor[0, layer_index(layer), p][None], [0], [p])
            direct = model.text.run(ids, hooks={(site, layer): hook}).embedding
            torch.testing.assert_close(patched.embeddings[k], direct, atol=1e-5, rtol=0)
    last = model.text.n_layers
    hook = patch_positions(donor[0, last - 1, t - 1][None], [0], [t - 1])
    direct = model.text.run(ids, hooks={(site, last): hook}).embedding
    torch.testing.assert_close(model.text.to_joint_space(values[:, last, t - 1]), direct, atol=1e-5, rtol=0)


def test_block_output_patch_rejects_other_sites(case):
    model, instances, _ = case
    clean, b, _ = clean_streams(model, instances.iloc[[0]])
    receiver = {"resid": clean.cache.stack("resid")[b:], "resid_mid": clean.cache.stack("resid_mid")[b:]}
    with pytest.raises(ValueError, match="patchable block sites"):
        block_output_patch_values(model.text, "resid", receiver, clean.cache.stack("mlp_out")[:b])


@pytest.fixture(scope="module")
def vision_case(tiny_clip):
    pixels = torch.randn(3, 3, tiny_clip.image_size, tiny_clip.image_size, generator=torch.Generator().manual_seed(2))
    acts = image_ablation_activations(tiny_clip, pixels)
    return tiny_clip, pixels, acts


def test_window_of_one_block_equals_block_output_replacement(vision_case):
    model, _, acts = vision_case
    n_layers = model.vision.n_layers
    for site, key in (("attn_out", "single_attn_out"), ("mlp_out", "single_mlp_out")):
        single, order = replace_block_outputs(model.vision, acts["real_resid"], acts["real_resid_mid"],
                                              {site: acts[key]}, range(1, n_layers + 1), [site])
        windows = replace_block_output_windows(model.vision, acts["real_resid"], acts[key], site,
                                               [(layer, layer) for layer in order])
        torch.testing.assert_close(windows.reshape(-1, windows.shape[-1]), single, atol=1e-5, rtol=0)


def test_window_equals_a_hooked_forward(vision_case):
    model, pixels, acts = vision_case
    windows = replace_block_output_windows(model.vision, acts["real_resid"], acts["single_mlp_out"], "mlp_out",
                                           [(2, 3), (1, 2)])
    for w, (first, last) in enumerate([(2, 3), (1, 2)]):
        hooks = {("mlp_out", m): (lambda m: lambda x, key: acts["single_mlp_out"][:, m - 1])(m)
                 for m in range(first, last + 1)}
        direct = model.vision.run(pixels, hooks=hooks).embedding
        torch.testing.assert_close(windows[w], direct, atol=1e-5, rtol=0)


def test_windows_are_checked(vision_case):
    model, _, acts = vision_case
    with pytest.raises(ValueError, match="layer windows"):
        replace_block_output_windows(model.vision, acts["real_resid"], acts["single_mlp_out"], "mlp_out", [(2, 9)])
    assert layer_windows([2], 3) == [(1, 2), (2, 3)]
    with pytest.raises(InputError, match="window_sizes"):
        layer_windows([4], 3)


# --------------------------------------------------------------------------- negation follow-ups


def test_window_ablation_of_single_blocks_is_image_ablation(vision_case):
    model, _, acts = vision_case
    cap, foil = torch.randn(3, 2, model.text.proj.shape[1], generator=torch.Generator().manual_seed(3)).unbind(1)
    ref = image_ablation_effects_from_activations(model, **acts, caption_emb=cap, foil_emb=foil, keys=list("abc"),
                                                  negation=["foil", "caption", "foil"], progress=False)
    table = window_ablation_effects_from_activations(
        model, acts["real_resid"], acts["single_attn_out"], acts["single_mlp_out"], cap, foil, [1, 2],
        keys=list("abc"), negation=["foil", "caption", "foil"], progress=False)
    assert len(table) == 3 * 2 * (3 + 2)
    ones = table[table["window_size"] == 1].merge(ref, left_on=["key", "component", "first_layer"],
                                                   right_on=["key", "component", "layer"], validate="one_to_one")
    np.testing.assert_allclose(ones["iae_x"], ones["iae_y"], atol=TOL)
    summary = window_summary(table)
    both = summary[(summary["negation"] == "both") & (summary["window_size"] == 2)]
    assert set(both["n"]) == {3}
    expected = table[(table["window_size"] == 2) & (table["component"] == "mha") & (table["first_layer"] == 1)]
    got = both[(both["component"] == "mha") & (both["first_layer"] == 1)]["mean_iae"].item()
    assert got == pytest.approx(expected["iae"].mean())


@pytest.fixture(scope="module")
def pair_table(case):
    model, instances, image_emb = case
    return pair_patching_effects(model, instances, image_emb, batch_size=2, progress=False)


def test_single_slot_sets_equal_causal_tracing(case, pair_table):
    model, instances, image_emb = case
    ct = causal_tracing_effects(model, instances, image_emb, progress=False)
    singles = pair_table[pair_table["second"] == ""]
    for slot, column in (("negator", "negator_pos"), ("subject_first", "subject_first_pos"),
                         ("full_stop", "full_stop_pos"), ("EOT", "eot_pos")):
        position = instances[["key", column]].rename(columns={column: "position"})
        ref = ct.merge(position, on=["key", "position"])
        got = singles[singles["first"] == slot].merge(ref, on=["key", "layer"], suffixes=("", "_ct"),
                                                      validate="one_to_one")
        assert len(got) == len(instances) * (model.text.n_layers + 1)
        np.testing.assert_allclose(got["cte"], got["cte_ct"], atol=1e-6)


def test_pair_sets_cover_every_pair_of_non_empty_slots(case, pair_table):
    model, instances, _ = case
    per_key = pair_table.groupby("key")["patch"].nunique()
    # "dog" and "cars" have one-token subjects (no further subject tokens): 4 slots, 6 pairs
    assert per_key.to_dict() == {"dog": 4 + 6, "cars": 4 + 6, "people": 5 + 10}
    assert set(pair_table.loc[pair_table["key"] == "people", "patch"]) >= set(PAIR_LABELS)
    people = slot_positions(instances.iloc[[1]])[0]
    assert people["subject_further"] == [5, 6, 7]
    row = pair_table[(pair_table["key"] == "people") & (pair_table["patch"] == "negator+subject_further")]
    assert set(row["n_tokens"]) == {4}
    last = pair_table[pair_table["layer"] == model.text.n_layers]
    with_eot = last["patch"].str.contains("EOT")
    np.testing.assert_allclose(last.loc[with_eot, "cte"], 1.0, atol=1e-5)
    np.testing.assert_allclose(last.loc[~with_eot, "cte"], 0.0, atol=1e-6)


def test_pair_comparison_and_summary(case, pair_table):
    model, _, _ = case
    table = pair_table.assign(segment="correct")
    cmp = pair_comparison(table)
    np.testing.assert_array_equal(cmp["sum_singles"], cmp["cte_first"] + cmp["cte_second"])
    np.testing.assert_array_equal(cmp["interaction"], cmp["cte_pair"] - (cmp["cte_first"] + cmp["cte_second"]))
    row = cmp[(cmp["key"] == "people") & (cmp["layer"] == 1) & (cmp["pair"] == "negator+EOT")].iloc[0]
    singles = pair_table[(pair_table["key"] == "people") & (pair_table["layer"] == 1)].set_index("patch")["cte"]
    assert row["cte_first"] == singles["negator"] and row["cte_second"] == singles["EOT"]
    summary = pair_summary(cmp, model.text.n_layers)
    assert len(summary) == 2 * 4 * (model.text.n_layers + 1) * len(PAIR_LABELS)
    foil = summary[(summary["negation"] == "foil") & (summary["segment"] == "all") & (summary["layer"] == 1)]
    counts = foil.set_index("pair")["n"]
    assert counts["negator+EOT"] == 2 and counts["negator+subject_further"] == 0
    assert counts.index[counts == 0].tolist() == [p for p in PAIR_LABELS if "subject_further" in p]
    with pytest.raises(InputError, match="lacks column"):
        pair_comparison(pair_table.drop(columns="first"))


def test_site_tracing_invariants(case):
    model, instances, image_emb = case
    table = site_tracing_effects(model, instances, image_emb, progress=False)
    ct = causal_tracing_effects(model, instances, image_emb, progress=False)
    assert set(table["layer"]) == set(range(1, model.text.n_layers + 1))
    merged = table.merge(instances[["key", "negator_pos"]], on="key")
    assert (merged.loc[merged["position"] < merged["negator_pos"], "cte"] == 0).all()
    # block 1 after the negator: same token and position in both sentences, so the attention output is the only
    # difference and patching it equals patching resid[1]
    block1 = merged[(merged["site"] == "attn_out") & (merged["layer"] == 1)
                    & (merged["position"] > merged["negator_pos"])]
    ref = block1.merge(ct[ct["layer"] == 1], on=["key", "position"], suffixes=("", "_resid"), validate="many_to_one")
    assert len(ref) > 0
    np.testing.assert_allclose(ref["S_patched"], ref["S_patched_resid"], atol=1e-4)
    with pytest.raises(InputError, match="sites"):
        site_tracing_effects(model, instances, image_emb, sites=["resid"], progress=False)


@pytest.fixture(scope="module")
def probe_case(tiny_clip, tmp_path_factory):
    negated = [f"There is no {noun}." for noun in NOUNS]
    non_negated = [f"There is a {noun}." for noun in NOUNS]
    pairs = pd.DataFrame({"key": [f"k{i:02d}" for i in range(len(NOUNS))], "negation": "foil", "negated": negated,
                          "non_negated": non_negated})
    instances = generic_instances(tiny_clip, pairs)
    path = tmp_path_factory.mktemp("probes") / "text.h5"
    write_text_cache(tiny_clip, instances["key"].tolist(), {"negated": instances["negated_ids"].tolist(),
                                                            "non_negated": instances["non_negated_ids"].tolist()},
                     path, model_id="tiny", progress=False)
    return instances, path


def test_probes_on_random_init_weights(probe_case):
    instances, path = probe_case
    features = probe_features_from_cache(path, instances.iloc[::-1].reset_index(drop=True))
    table = probe_table(features, n_splits=4, seed=0)
    assert set(table.loc[table["generic_position"] != "subject_further", "n_instances"]) == {len(NOUNS)}
    control = table["control_accuracy"].dropna()
    assert abs(control.mean() - 0.5) < 0.1 and control.between(0.25, 0.75).all()
    before = table[table["generic_position"].isin(["SOT", "There", "is/are"])]
    np.testing.assert_allclose(before["accuracy"], 0.5, atol=0)  # identical features: one of each pair right
    negator = table[table["generic_position"] == "negator"]
    assert (negator["accuracy"] == 1.0).all()  # "no" against "a": different tokens at every layer


def test_probe_features_and_control_labels(probe_case):
    instances, path = probe_case
    with h5py.File(path) as f:
        neg, non = f["negated/resid"][:], f["non_negated/resid"][:]
    slots = slot_positions(instances)
    features = probe_features(neg, non, generic_slot_positions(instances))
    x, y, groups = features["negator"]
    np.testing.assert_array_equal(x[0], neg[0][:, slots[0]["negator"][0]])
    np.testing.assert_array_equal(y[:4], [1, 0, 1, 0])
    swapped = swapped_labels(y, groups, seed=0)
    per_group = pd.Series(swapped).groupby(groups).sum()
    assert (per_group == 1).all() and (swapped != y).sum() == 2 * (len(NOUNS) // 2)
    with pytest.raises(InputError, match="n_splits"):
        probe_table(features, n_splits=1)


# --------------------------------------------------------------------------- covariates and config


def _save(tmp_path, name, array):
    from PIL import Image

    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(tmp_path / name)
    return tmp_path / name


def test_image_statistics_known_values(tmp_path):
    grey = image_statistics(_save(tmp_path, "grey.png", np.full((8, 8, 3), 51)))
    assert grey == pytest.approx({"brightness": 0.2, "contrast": 0.0, "colourfulness": 0.0})
    red = image_statistics(_save(tmp_path, "red.png", np.tile([255, 0, 0], (8, 8, 1))))
    assert red["colourfulness"] == pytest.approx(0.3 * np.hypot(1.0, 0.5))
    halves = np.zeros((8, 8, 3))
    halves[:4] = 255
    assert image_statistics(_save(tmp_path, "halves.png", halves))["contrast"] == pytest.approx(0.5)


def test_covariate_regression_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    n = 400
    data = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "const": 1.0})
    data["d"] = 1.0 + 2.0 * data["a"] / data["a"].std(ddof=0) + rng.normal(scale=0.5, size=n)
    table, info = fit_model(data, "m", ["a", "b", "const"])
    assert info["constant_predictors_dropped"] == ["const"]
    coef = table.set_index("term")
    assert coef.loc["a", "ci_low"] < 2.0 < coef.loc["a", "ci_high"]
    assert coef.loc["b", "ci_low"] < 0.0 < coef.loc["b", "ci_high"]
    assert coef.loc["intercept", "coefficient"] == pytest.approx(data["d"].mean())
    assert 0.9 < info["r2"] < 1 and coef.loc["a", "delta_r2"] > 0.8
    small, small_info = fit_model(data.iloc[:2], "m", ["a", "b"])
    assert "not_fitted" in small_info and small["coefficient"].isna().all()


def test_covariate_table_names_a_missing_image(tmp_path):
    instances = pd.DataFrame({"key": ["a"], "negation": ["foil"], "d": [0.1]})
    with pytest.raises(InputError, match="image files are missing"):
        covariate_table(instances, pd.DataFrame({"key": ["a"], "image_file": ["a.jpg"]}), tmp_path)
    with pytest.raises(InputError, match="no image"):
        covariate_table(instances, pd.DataFrame({"key": ["b"], "image_file": ["b.jpg"]}), tmp_path)


def test_followup_config_is_checked():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config" / "demo.yaml").read_text())
    schema = root / "workflow" / "schemas" / "config.schema.yaml"
    assert config_problems(config, schema) == []
    config["negation"]["followups"]["variant"] = "standard"
    problems = config_problems(config, schema)
    assert len(problems) == 1 and "negation.causal_tracing.variant" in problems[0]
    config["negation"]["followups"]["variant"] = "rephrased"
    config["negation"]["followups"]["probes"]["n_splits"] = 1
    config["negation"]["followups"]["ablation_windows"]["window_size"] = [2]
    problems = config_problems(config, schema)
    assert any("n_splits" in p and ">= 2" in p for p in problems)
    assert any("window_size" in p and "did you mean `window_sizes`" in p for p in problems)
