"""The generic intervention engine equals one hooked forward per intervention, and identity interventions change
nothing."""

import pytest
import torch

from clip_interp.interventions import iter_resid_patches, replace_block_outputs, resid_patch_sweep
from clip_interp.interventions.reference import reference_block_output_replacement
from clip_interp.models import layer_index, load_model, patch_positions, replace_hook

pytestmark = pytest.mark.usefixtures("one_thread")

RECEIVERS = ["There are some dogs on the grass.", "There is a cat."]
DONORS = ["There are no dogs on the grass.", "There is no cat."]


@pytest.fixture(scope="module", params=["toy", pytest.param("vit", marks=pytest.mark.slow)])
def model(request):
    torch.manual_seed(0)
    if request.param == "vit":
        return load_model({"backend": "open_clip", "name": "ViT-B-32", "random_init": True}, "cpu")
    return request.getfixturevalue("tiny_clip")


def _text_pair(model):
    receiver, donor = model.tokenizer(RECEIVERS), model.tokenizer(DONORS)
    t = max(receiver.shape[1], donor.shape[1])
    pad = lambda ids: torch.nn.functional.pad(ids, (0, t - ids.shape[1]))  # noqa: E731
    return pad(receiver), pad(donor)


@torch.no_grad()
def test_text_patch_sweep_equals_one_hooked_forward_per_patch(model):
    tower = model.text
    receiver, donor = _text_pair(model)
    pool = tower.pool_index(receiver)
    clean_r, clean_d = tower.run(receiver, cache=["resid"]), tower.run(donor, cache=["resid"])
    r_resid, d_resid = clean_r.cache.stack("resid"), clean_d.cache.stack("resid")
    mask = torch.ones(receiver.shape, dtype=torch.bool)
    mask[1, 1] = False
    sweep = resid_patch_sweep(tower, r_resid, d_resid, mask, pool, clean_r.embedding, clean_d.embedding)
    assert sweep.shape == (2, tower.n_layers + 1, receiver.shape[1], clean_r.embedding.shape[1])
    for row in range(2):
        for layer in range(tower.n_layers + 1):
            for pos in range(receiver.shape[1]):
                hook = patch_positions(d_resid[row:row + 1, layer, pos], [0], [pos])
                direct = tower.run(receiver[row:row + 1], hooks={("resid", layer): hook},
                                   pool_index=pool[row:row + 1]).embedding[0]
                expected = clean_r.embedding[row] if not mask[row, pos] else direct
                torch.testing.assert_close(sweep[row, layer, pos], expected, atol=1e-5, rtol=0)


@torch.no_grad()
def test_patching_a_sequence_with_itself_changes_nothing(model):
    tower = model.text
    receiver, _ = _text_pair(model)
    clean = tower.run(receiver, cache=["resid"])
    resid = clean.cache.stack("resid")
    mask = torch.ones(receiver.shape, dtype=torch.bool)
    batches = list(iter_resid_patches(tower, resid, resid, mask, tower.pool_index(receiver)))
    assert [b.position for b in batches] == list(range(int(tower.pool_index(receiver).max()) + 1))
    for b in batches:
        expected = clean.embedding[b.rows].expand(tower.n_layers, -1, -1)
        torch.testing.assert_close(b.embeddings, expected, atol=1e-5, rtol=0)


@torch.no_grad()
def test_vision_patch_sweep_reaches_positions_before_the_patch(model):
    """A non-causal tower: a patch anywhere changes the class token, and prefix reuse must not be used."""
    tower = model.vision
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, model.image_size, model.image_size)
    donor = torch.randn(2, 3, model.image_size, model.image_size)
    clean_r, clean_d = tower.run(pixels, cache=["resid"]), tower.run(donor, cache=["resid"])
    r_resid, d_resid = clean_r.cache.stack("resid"), clean_d.cache.stack("resid")
    mask = torch.zeros(r_resid.shape[0], r_resid.shape[2], dtype=torch.bool)
    mask[:, [0, 3]] = True
    pool = tower.pool_index(pixels)
    sweep = resid_patch_sweep(tower, r_resid, d_resid, mask, pool, clean_r.embedding, clean_d.embedding)
    for layer in (0, tower.n_layers - 1, tower.n_layers):
        for pos in (0, 3):
            hook = patch_positions(d_resid[:, layer, pos], [0, 1], [pos, pos])
            direct = tower.run(pixels, hooks={("resid", layer): hook}).embedding
            torch.testing.assert_close(sweep[:, layer, pos], direct, atol=1e-5, rtol=0)
    assert not torch.allclose(sweep[:, 1, 3], clean_r.embedding, atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("sites", [("attn_out",), ("mlp_out",), ("attn_out", "mlp_out")])
def test_block_output_replacement_equals_hooked_forwards(model, sites):
    tower = model.vision
    torch.manual_seed(2)
    pixels = torch.randn(3, 3, model.image_size, model.image_size)
    donor = torch.randn(3, 3, model.image_size, model.image_size)
    clean = tower.run(pixels, cache=["resid", "resid_mid"])
    donor_out = tower.run(donor, cache=["attn_out", "mlp_out"]).cache
    values = {s: donor_out.stack(s) for s in ("attn_out", "mlp_out")}
    layers = sorted({1, tower.n_layers // 2, tower.n_layers})
    emb, order = replace_block_outputs(tower, clean.cache.stack("resid"), clean.cache.stack("resid_mid"), values,
                                       layers, sites)
    assert sorted(order) == layers
    emb = emb.view(len(order), len(sites), len(pixels), -1)
    for k, layer in enumerate(order):
        for j, site in enumerate(sites):
            hook = replace_hook(values[site][:, layer_index(layer)])
            direct = tower.run(pixels, hooks={(site, layer): hook}).embedding
            torch.testing.assert_close(emb[k, j], direct, atol=1e-5, rtol=0)


@torch.no_grad()
def test_replacing_block_outputs_by_their_own_values_changes_nothing(model):
    tower = model.vision
    torch.manual_seed(3)
    pixels = torch.randn(2, 3, model.image_size, model.image_size)
    clean = tower.run(pixels, cache=["resid", "resid_mid", "attn_out", "mlp_out"])
    values = {s: clean.cache.stack(s) for s in ("attn_out", "mlp_out")}
    layers = list(range(1, tower.n_layers + 1))
    emb, order = replace_block_outputs(tower, clean.cache.stack("resid"), clean.cache.stack("resid_mid"), values,
                                       layers, ("attn_out", "mlp_out"))
    torch.testing.assert_close(emb, clean.embedding.repeat(len(order) * 2, 1), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="replaceable sites"):
        replace_block_outputs(tower, clean.cache.stack("resid"), clean.cache.stack("resid_mid"), values, layers,
                              ("pattern",))


@torch.no_grad()
def test_library_reference_equals_the_engine(model):
    tower = model.vision
    torch.manual_seed(4)
    pixels = torch.randn(1, 3, model.image_size, model.image_size)
    donor = torch.randn(1, 3, model.image_size, model.image_size)
    layers, sites = [1, tower.n_layers], ("attn_out", "mlp_out")
    reference = reference_block_output_replacement(model, pixels, donor, layers, sites)
    clean = tower.run(pixels, cache=["resid", "resid_mid"])
    donor_out = tower.run(donor, cache=["attn_out", "mlp_out"]).cache
    emb, order = replace_block_outputs(tower, clean.cache.stack("resid"), clean.cache.stack("resid_mid"),
                                       {s: donor_out.stack(s) for s in sites}, layers, sites)
    engine = torch.nn.functional.normalize(emb, dim=-1).view(len(order), len(sites), -1)
    engine = engine[[order.index(layer) for layer in layers]]
    torch.testing.assert_close(engine, reference, atol=1e-5, rtol=0)
