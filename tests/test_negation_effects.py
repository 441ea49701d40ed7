"""The fast negation engine obeys the definitions' invariants and equals the direct library computation."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from clip_interp.encoding import encode_images, encode_texts
from clip_interp.errors import InputError
from clip_interp.models import load_model, patch_positions
from clip_interp.negation.caches import single_colour
from clip_interp.negation.causal_tracing import causal_tracing_effects
from clip_interp.negation.image_ablation import (
    IMAGE_ABLATION_COLUMNS,
    image_ablation_activations,
    image_ablation_effects,
    image_ablation_effects_from_activations,
)
from clip_interp.negation.labels import COMPONENTS
from clip_interp.negation.library_references import reference_causal_tracing, reference_image_ablation
from clip_interp.negation.tracing_kernel import CAUSAL_TRACING_COLUMNS, tracing_instances

TOL = 1e-4
PAIRS = pd.DataFrame({
    "key": ["dog", "people"],
    "negation": ["foil", "caption"],
    "negated": ["There is no dog.", "There are no people in the picture."],
    "non_negated": ["There is a dog.", "There are some people in the picture."],
})
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 128, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 3},
}


MORE_PAIRS = pd.concat([PAIRS, pd.DataFrame({
    "key": ["late_negator"], "negation": ["foil"],
    "negated": ["In the picture there are no people."], "non_negated": ["In the picture there are some people."],
})], ignore_index=True)


def _case(model, pairs=PAIRS, seed=0):
    """Tracing instances, caption/foil sentences and images for a table of sentence pairs."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(pairs), 3, model.image_size, model.image_size, generator=generator)
    instances = tracing_instances(model, pairs)
    in_caption = pairs["negation"] == "caption"
    captions = pairs["negated"].where(in_caption, pairs["non_negated"]).tolist()
    foils = pairs["non_negated"].where(in_caption, pairs["negated"]).tolist()
    return instances, captions, foils, pixels


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    model = load_model({"backend": "open_clip", "name": "ViT-B-32", "random_init": True}, "cpu")
    return model, *_case(model)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "negation-engine-tiny.json"
    path.write_text(json.dumps(TINY_CONFIG))
    torch.manual_seed(0)
    model = load_model({"backend": "open_clip", "name": path.stem, "config": str(path), "random_init": True}, "cpu")
    return model, *_case(model, MORE_PAIRS)


def _merged(fast, ref, on):
    return fast.merge(ref, on=on, suffixes=("", "_ref"), validate="one_to_one")


def test_single_colour_image_is_the_channel_mean():
    pixels = torch.randn(2, 3, 8, 8)
    single = single_colour(pixels)
    assert single.shape == pixels.shape
    torch.testing.assert_close(single, pixels.mean(dim=(2, 3))[:, :, None, None].expand_as(pixels))


def test_tracing_instances_positions(vit):
    model, instances, *_ = vit
    assert instances["negator_pos"].tolist() == [3, 3]
    assert instances["eot_pos"].tolist() == [len(s) - 1 for s in instances["negated_ids"]]
    bad = PAIRS.assign(non_negated=["There is a big dog.", "There are people in the picture."])
    with pytest.raises(InputError, match="equal lengths"):
        tracing_instances(model, bad)


def test_causal_tracing_invariants(vit):
    model, instances, _, _, pixels = vit
    table = causal_tracing_effects(model, instances, encode_images(model, pixels), progress=False)
    n_layers = model.text.n_layers
    assert list(table.columns) == CAUSAL_TRACING_COLUMNS
    assert len(table) == sum((n_layers + 1) * len(ids) for ids in instances["negated_ids"])
    assert (table["d"].abs() > 1e-2).all(), "the random-init instances need a non-negligible d"
    for _, inst in instances.iterrows():
        rows = table[table["key"] == inst["key"]].set_index(["layer", "position"])
        assert abs(rows.loc[(0, inst["negator_pos"]), "cte"] - 1) < TOL
        assert abs(rows.loc[(n_layers, inst["eot_pos"]), "cte"] - 1) < TOL
        before = rows[rows.index.get_level_values("position") < inst["negator_pos"]]
        assert (before["cte"] == 0).all() and (before["d_star"] == 0).all()


def test_engine_equals_reference_tiny(tiny):
    """Two instances share a length but not the negator position, so they share a batch with different patches."""
    model, instances, captions, foils, pixels = tiny
    assert instances["eot_pos"].iloc[1] == instances["eot_pos"].iloc[2]
    assert instances["negator_pos"].iloc[1] != instances["negator_pos"].iloc[2]
    ref = reference_causal_tracing(model, instances, pixels, all_positions=True)
    for batch_size in (1, 8):
        fast = causal_tracing_effects(model, instances, encode_images(model, pixels), batch_size=batch_size,
                                      progress=False)
        assert fast["key"].drop_duplicates().tolist() == instances["key"].tolist()
        both = _merged(fast, ref, ["key", "layer", "position"])
        assert len(both) == len(ref)
        for col in ("S_caption", "S_foil", "S_patched", "d_star", "cte"):
            assert (both[col] - both[f"{col}_ref"]).abs().max() < TOL, col
    keys = instances["key"].tolist()
    fast_ia = image_ablation_effects(model, pixels, captions, foils, keys=keys, batch_size=2, progress=False)
    ref_ia = reference_image_ablation(model, pixels, captions, foils, keys=keys)
    both = _merged(fast_ia, ref_ia, ["key", "layer", "component"])
    assert len(both) == len(ref_ia) == len(instances) * model.vision.n_layers * 2
    for col in ("d", "d_star", "iae"):
        assert (both[col] - both[f"{col}_ref"]).abs().max() < TOL, col


@pytest.mark.slow
def test_engine_equals_reference_vit(vit):
    """On ViT-B/32, the reference runs only a few layers to keep the test short."""
    model, instances, captions, foils, pixels = vit
    one = instances.iloc[:1]
    fast = causal_tracing_effects(model, one, encode_images(model, pixels[:1]), progress=False)
    ref = reference_causal_tracing(model, one, pixels[:1], layers=[0, 6, 11])
    both = _merged(fast, ref.dropna(subset=["S_patched"]), ["key", "layer", "position"])
    assert len(both) == 3 * len(one["negated_ids"].iloc[0])
    assert (both["d_star"] - both["d_star_ref"]).abs().max() < TOL
    assert (both["cte"] - both["cte_ref"]).abs().max() < TOL
    fast_ia = image_ablation_effects(model, pixels[:1], captions[:1], foils[:1], layers=[1, 11, 12], progress=False)
    ref_ia = reference_image_ablation(model, pixels[:1], captions[:1], foils[:1], layers=[1, 11, 12])
    both = _merged(fast_ia, ref_ia, ["key", "layer", "component"])
    assert len(both) == 6
    assert (both["iae"] - both["iae_ref"]).abs().max() < TOL


def test_self_ablation_has_no_effect(vit):
    model, _, captions, foils, pixels = vit
    with torch.inference_mode():
        real = model.encode_image(pixels, cache=["resid", "resid_mid", "attn_out", "mlp_out"]).cache
    table = image_ablation_effects_from_activations(
        model, real.stack("resid"), real.stack("resid_mid"), real.stack("attn_out"), real.stack("mlp_out"),
        encode_texts(model, captions), encode_texts(model, foils), progress=False,
    )
    assert len(table) == len(captions) * model.vision.n_layers * 2
    assert table["iae"].abs().max() < TOL


@pytest.mark.slow
def test_from_activations_equals_convenience(vit, tmp_path):
    model, _, captions, foils, pixels = vit
    convenience = image_ablation_effects(model, pixels, captions, foils, keys=PAIRS["key"],
                                         negation=PAIRS["negation"], batch_size=1, progress=False)
    acts = image_ablation_activations(model, pixels)
    with h5py.File(tmp_path / "acts.h5", "w") as f:
        for name, value in acts.items():
            f.create_dataset(name, data=value.numpy())
    with h5py.File(tmp_path / "acts.h5", "r") as f:
        stored = image_ablation_effects_from_activations(
            model, f["real_resid"], f["real_resid_mid"], f["single_attn_out"], f["single_mlp_out"],
            encode_texts(model, captions), encode_texts(model, foils),
            keys=PAIRS["key"], negation=PAIRS["negation"], progress=False,
        )
    assert list(stored.columns) == IMAGE_ABLATION_COLUMNS
    pd.testing.assert_frame_equal(stored[["key", "negation", "layer", "component"]],
                                  convenience[["key", "negation", "layer", "component"]])
    for col in ("S_caption", "S_foil", "d", "d_star", "iae"):
        np.testing.assert_allclose(stored[col], convenience[col], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def hf_small(tmp_path_factory):
    """A random-init Hugging Face CLIPModel of small width (the HF backend's hooks and blocks)."""
    from transformers import CLIPConfig

    folder = tmp_path_factory.mktemp("hf_clip")
    CLIPConfig(
        text_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
                       "image_size": 64, "patch_size": 16},
        projection_dim=32,
    ).save_pretrained(folder)
    torch.manual_seed(0)
    model = load_model({"backend": "hf", "name": "small", "path": str(folder), "random_init": True}, "cpu")
    return model, *_case(model, MORE_PAIRS)


@torch.inference_mode()
def test_engine_on_hf_clip_equals_one_hooked_forward_per_intervention(hf_small):
    """The batched, resumed engine equals full forwards of the hooked HF towers, one per patch or ablation."""
    model, instances, captions, foils, pixels = hf_small
    image_emb = encode_images(model, pixels)
    fast = causal_tracing_effects(model, instances, image_emb, batch_size=2, progress=False)
    for i, inst in instances.iterrows():
        neg = torch.as_tensor([inst["negated_ids"]])
        non = torch.as_tensor([inst["non_negated_ids"]])
        eot = torch.as_tensor([inst["eot_pos"]])
        donor = model.text.run(neg, cache=["resid"], pool_index=eot).cache
        rows = fast[fast["key"] == inst["key"]].set_index(["layer", "position"])
        for layer in range(model.text.n_layers + 1):
            for pos in range(inst["negator_pos"], inst["eot_pos"] + 1):
                hook = patch_positions(donor[("resid", layer)][:, pos], [0], [pos])
                emb = model.text.run(non, hooks={("resid", layer): hook}, pool_index=eot).embedding
                s_star = model.similarity(image_emb[i:i + 1], emb).item()
                assert abs(rows.loc[(layer, pos), "S_patched"] - s_star) < TOL, (inst["key"], layer, pos)
    caption_emb, foil_emb = encode_texts(model, captions), encode_texts(model, foils)
    table = image_ablation_effects(model, pixels, caption_emb, foil_emb, batch_size=2, progress=False)
    single = model.vision.run(single_colour(pixels), cache=["attn_out", "mlp_out"]).cache
    for comp, site in COMPONENTS.items():
        for layer in range(1, model.vision.n_layers + 1):
            value = single[(site, layer)]
            emb = model.vision.run(pixels, hooks={(site, layer): lambda x, key, value=value: value.clone()}).embedding
            d_star = (model.similarity(emb, caption_emb) - model.similarity(emb, foil_emb)).numpy()
            got = table[(table["component"] == comp) & (table["layer"] == layer)].sort_values("key")
            expected = pd.Series(d_star, index=range(len(d_star))).loc[got["key"].to_numpy()]
            np.testing.assert_allclose(got["d_star"].to_numpy(), expected.to_numpy(), atol=TOL, rtol=0)
