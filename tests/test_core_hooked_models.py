"""The hookable interface reproduces each library's forward and its interventions are exact."""

import pytest
import torch

from clip_interp.models import layer_index, load_model, patch_positions

SENTENCES = ["There are no people in the picture.", "There is a dog.", "There are some red circles on it."]


@pytest.fixture(scope="module", params=["open_clip", "hf"])
def model(request):
    torch.manual_seed(0)
    spec = {"backend": request.param, "name": "ViT-B-32" if request.param == "open_clip" else "random",
            "random_init": True}
    return load_model(spec, "cpu")


def library_features(model, ids, pixels):
    src = model.source_model
    if model.spec["backend"] == "open_clip":
        return src.encode_text(ids), src.encode_image(pixels), src(pixels, ids)
    text = src.get_text_features(input_ids=ids).pooler_output
    image = src.get_image_features(pixel_values=pixels).pooler_output
    return text, image, src(input_ids=ids, pixel_values=pixels)


@torch.no_grad()
def test_forward_matches_library(model):
    ids = model.tokenizer(SENTENCES, length=77)
    pixels = torch.randn(3, 3, model.image_size, model.image_size)
    lib_text, lib_image, lib_out = library_features(model, ids, pixels)
    text = model.encode_text(ids).embedding
    image = model.encode_image(pixels).embedding
    torch.testing.assert_close(text, lib_text, atol=1e-5, rtol=0)
    torch.testing.assert_close(image, lib_image, atol=1e-5, rtol=0)
    if model.spec["backend"] == "open_clip":
        lib_logits = (lib_out[2] * torch.nn.functional.normalize(lib_out[0], dim=-1)
                      @ torch.nn.functional.normalize(lib_out[1], dim=-1).T)
    else:
        lib_logits = lib_out.logits_per_image
    torch.testing.assert_close(model.similarity_matrix(image, text), lib_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(model.similarity(image, text), torch.diagonal(lib_logits), atol=1e-4, rtol=0)


@torch.no_grad()
def test_truncated_text_equals_padded(model):
    """With a causal mask, positions after EOT cannot change the EOT embedding."""
    ids = model.tokenizer(SENTENCES)
    full = model.encode_text(model.tokenizer(SENTENCES, length=77)).embedding
    torch.testing.assert_close(model.encode_text(ids).embedding, full, atol=1e-5, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("tower", ["text", "vision"])
def test_self_overwrite_and_decomposition(model, tower):
    inputs = model.tokenizer(SENTENCES) if tower == "text" else torch.randn(2, 3, model.image_size, model.image_size)
    run = model.encode_text if tower == "text" else model.encode_image
    clean = run(inputs, cache=["resid", "attn_out", "mlp_out", "head_out", "pattern", "resid_mid"])
    acts = clean.cache
    n_layers = getattr(model, tower).n_layers
    hooks = {key: (lambda value: (lambda x, key: value.clone()))(val) for key, val in acts.items()}
    again = run(inputs, hooks=hooks)
    torch.testing.assert_close(again.embedding, clean.embedding, atol=0, rtol=0)
    bias = [b.b_out for b in getattr(model, tower).blocks]
    for layer in range(1, n_layers + 1):
        recomposed = acts[("head_out", layer)].sum(dim=2) + bias[layer_index(layer)]
        torch.testing.assert_close(recomposed, acts[("attn_out", layer)], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(acts[("resid", layer - 1)] + acts[("attn_out", layer)], acts[("resid_mid", layer)])
        torch.testing.assert_close(acts[("resid_mid", layer)] + acts[("mlp_out", layer)], acts[("resid", layer)])
        pattern = acts[("pattern", layer)]
        torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)))
        if tower == "text":
            assert torch.triu(pattern, diagonal=1).abs().max() == 0


@torch.no_grad()
@pytest.mark.parametrize("tower", ["text", "vision"])
def test_resume_reproduces_forward(model, tower):
    inputs = model.tokenizer(SENTENCES) if tower == "text" else torch.randn(2, 3, model.image_size, model.image_size)
    t = getattr(model, tower)
    clean = t.run(inputs, cache=["resid"])
    for layer in range(t.n_layers + 1):
        resumed = t.run(inputs, start_layer=layer, start_resid=clean.cache[("resid", layer)])
        torch.testing.assert_close(resumed.embedding, clean.embedding, atol=1e-5, rtol=0)


@torch.no_grad()
def test_prefix_kv_resume_matches_full_patch(model):
    """Resuming only the positions from p on, with the clean keys/values before p, equals a full patched run."""
    t = model.text
    ids = model.tokenizer(["There are no people in the picture."] * 2)
    other = model.tokenizer(["There are some people in the picture."] * 2)
    clean = t.run(ids, cache=["resid"])
    donor = t.run(other, cache=["resid"])
    layer, pos = 4, 3
    hook = patch_positions(donor.cache[("resid", layer)][:, pos], rows=[0, 1], positions=[pos, pos])
    reference = t.run(ids, hooks={("resid", layer): hook})
    start = hook(clean.cache[("resid", layer)])[:, pos:]
    prefix = {later: tuple(z[:, :, :pos] for z in t.keys_values(clean.cache[("resid", later - 1)], later))
              for later in range(layer + 1, t.n_layers + 1)}
    eot = t.pool_index(ids) - pos
    fast = t.run(start_layer=layer, start_resid=start, prefix_kv=prefix, pool_index=eot)
    torch.testing.assert_close(fast.embedding, reference.embedding, atol=1e-5, rtol=0)
    assert not torch.allclose(reference.embedding, clean.embedding)


def test_bad_site_is_rejected(model):
    with pytest.raises(ValueError, match="no hook site"):
        model.text.run(model.tokenizer(["a"]), cache=[("resid", 99)])
    with pytest.raises(ValueError, match="unknown site"):
        model.text.run(model.tokenizer(["a"]), cache=["residual"])


# --------------------------------------------------------------------------- sites for decomposition


def _inputs(model, tower):
    torch.manual_seed(3)
    return model.tokenizer(SENTENCES) if tower == "text" else torch.randn(2, 3, model.image_size, model.image_size)


@torch.no_grad()
@pytest.mark.parametrize("tower", ["text", "vision"])
def test_head_source_out_sums_to_the_pooled_attention_output(model, tower):
    t = getattr(model, tower)
    inputs = _inputs(model, tower)
    out = t.run(inputs, cache=["head_source_out", "head_out", "attn_out", "v", "z", "pattern"])
    acts = out.cache
    pool = t.pool_index(inputs)
    rows = torch.arange(len(pool))
    for layer in (1, t.n_layers // 2, t.n_layers):
        per_source = acts[("head_source_out", layer)]
        assert per_source.shape == (len(pool), t.n_heads, acts[("pattern", layer)].shape[-1], t.d_model)
        heads = acts[("head_out", layer)][rows, pool]
        torch.testing.assert_close(per_source.sum(dim=2), heads, atol=1e-5, rtol=0)
        total = per_source.sum(dim=(1, 2)) + t.block(layer).b_out
        torch.testing.assert_close(total, acts[("attn_out", layer)][rows, pool], atol=1e-5, rtol=0)
        z = torch.einsum("bhqk,bkhd->bqhd", acts[("pattern", layer)], acts[("v", layer)])
        torch.testing.assert_close(z, acts[("z", layer)], atol=1e-5, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("tower", ["text", "vision"])
def test_final_layernorm_statistics_and_projection_rebuild_the_embedding(model, tower):
    t = getattr(model, tower)
    inputs = _inputs(model, tower)
    out = t.run(inputs, cache=["resid", "ln_final_mean", "ln_final_scale"])
    pool = t.pool_index(inputs)
    r = out.cache[("resid", t.n_layers)][torch.arange(len(pool)), pool]
    mean, scale = out.cache[("ln_final_mean", t.n_layers)], out.cache[("ln_final_scale", t.n_layers)]
    assert mean.shape == scale.shape == (len(pool),)
    ln = t.ln_final
    normalised = ln.weight * (r - mean[:, None]) / scale[:, None] + ln.bias
    torch.testing.assert_close(normalised @ t.proj, out.embedding, atol=1e-5, rtol=0)
    torch.testing.assert_close(t.to_joint_space(r), out.embedding, atol=0, rtol=0)


@torch.no_grad()
def test_hooks_get_their_key_and_share_a_site(model):
    ids = model.tokenizer(SENTENCES)
    seen = []

    def add_one(x, key):
        seen.append(("add", key))
        return x + 1

    def double(x, key):
        seen.append(("double", key))
        return x * 2

    def observe(x, key):
        seen.append(("observe", key))

    clean = model.text.run(ids, cache=[("mlp_out", 2)])
    hooked = model.text.run(ids, hooks=[(("mlp_out", 2), add_one), (("mlp_out", 2), double), (("resid", 0), observe)],
                            cache=[("mlp_out", 2)])
    assert seen == [("observe", ("resid", 0)), ("add", ("mlp_out", 2)), ("double", ("mlp_out", 2))]
    torch.testing.assert_close(hooked.cache[("mlp_out", 2)], (clean.cache[("mlp_out", 2)] + 1) * 2)
    again = model.text.run(ids, hooks={("mlp_out", 2): [add_one, double]})
    torch.testing.assert_close(again.embedding, hooked.embedding, atol=0, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("tower", ["text", "vision"])
def test_pooled_query_mode_and_resuming_from_resid_mid(model, tower):
    t = getattr(model, tower)
    inputs = _inputs(model, tower)
    clean = t.run(inputs, cache=["resid", "resid_mid"])
    pooled = t.run(inputs, pooled_query_only=True, cache=[("pattern", t.n_layers), ("pattern", 1)])
    torch.testing.assert_close(pooled.embedding, clean.embedding, atol=1e-5, rtol=0)
    assert pooled.cache[("pattern", t.n_layers)].shape[2] == 1
    assert pooled.cache[("pattern", 1)].shape[2] == clean.cache[("resid", 0)].shape[1]
    assert pooled.resid_final.shape[1] == 1
    for layer in (1, t.n_layers):
        resumed = t.run(inputs, start_layer=layer, start_resid=clean.cache[("resid_mid", layer)], start_at="resid_mid")
        torch.testing.assert_close(resumed.embedding, clean.embedding, atol=1e-5, rtol=0)


@torch.no_grad()
def test_ablation_hooks(model):
    from clip_interp.models import mean_ablation_hook, replace_hook, zero_ablation_hook

    t = model.vision
    pixels = _inputs(model, "vision")
    layer, head = 3, 5
    clean = t.run(pixels, cache=[("head_out", layer), ("attn_out", layer), ("resid", 0)])
    zeroed = t.run(pixels, hooks={("head_out", layer): zero_ablation_hook(heads=[head])}, cache=[("attn_out", layer)])
    expected = clean.cache[("attn_out", layer)] - clean.cache[("head_out", layer)][:, :, head]
    torch.testing.assert_close(zeroed.cache[("attn_out", layer)], expected, atol=1e-5, rtol=0)

    by_attn_out = t.run(pixels, hooks={("attn_out", layer): replace_hook(expected)})
    by_head = t.run(pixels, hooks={("head_out", layer): zero_ablation_hook(heads=[head])})
    torch.testing.assert_close(by_head.embedding, by_attn_out.embedding, atol=1e-5, rtol=0)

    mean = clean.cache[("head_out", layer)].mean(dim=0)
    averaged = t.run(pixels, hooks={("head_out", layer): mean_ablation_hook(mean, heads=[head], positions=[0, 4])},
                     cache=[("head_out", layer)]).cache[("head_out", layer)]
    original = clean.cache[("head_out", layer)]
    for row in range(len(pixels)):
        torch.testing.assert_close(averaged[row, [0, 4], head], mean[[0, 4], head])
    untouched = torch.ones_like(averaged, dtype=torch.bool)
    untouched[:, [0, 4], head] = False
    assert torch.equal(averaged[untouched], original[untouched])

    plain = t.run(pixels)
    same = t.run(pixels, hooks={("resid", 0): replace_hook(clean.cache[("resid", 0)][:, 2:5], positions=[2, 3, 4])})
    torch.testing.assert_close(same.embedding, plain.embedding, atol=0, rtol=0)
    with pytest.raises(ValueError, match="no head axis"):
        t.run(pixels, hooks={("resid", 1): replace_hook(0.0, heads=[0])})


def test_patch_grid_metadata(model):
    v = model.vision
    assert (v.patch_size, v.grid_size, v.has_class_token) == (32, (7, 7), True)
    resid = v.run(torch.zeros(1, 3, 224, 224), cache=[("resid", 0)]).cache[("resid", 0)]
    assert v.grid_size[0] * v.grid_size[1] + 1 == resid.shape[1]
    assert model.text.patch_size is None and model.text.has_class_token is False
