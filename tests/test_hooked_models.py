"""The hookable interface reproduces each library's forward and its interventions are exact."""

import pytest
import torch

from clip_interp.models import load_model, patch_positions

SENTENCES = ["There are no people in the picture.", "There is a dog.", "There are some red circles on it."]


@pytest.fixture(scope="module", params=["open_clip", "hf"])
def model(request):
    torch.manual_seed(0)
    spec = {"backend": request.param, "name": "ViT-B-32" if request.param == "open_clip" else "random", "random_init": True}
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
        lib_logits = lib_out[2] * torch.nn.functional.normalize(lib_out[0], dim=-1) @ torch.nn.functional.normalize(lib_out[1], dim=-1).T
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
        recomposed = acts[("head_out", layer)].sum(dim=2) + bias[layer - 1]
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
    prefix = {l: tuple(z[:, :, :pos] for z in t.keys_values(clean.cache[("resid", l - 1)], l)) for l in range(layer + 1, t.n_layers + 1)}
    eot = t.pool_index(ids) - pos
    fast = t.run(start_layer=layer, start_resid=start, prefix_kv=prefix, pool_index=eot)
    torch.testing.assert_close(fast.embedding, reference.embedding, atol=1e-5, rtol=0)
    assert not torch.allclose(reference.embedding, clean.embedding)


def test_bad_site_is_rejected(model):
    with pytest.raises(ValueError, match="no hook site"):
        model.text.run(model.tokenizer(["a"]), cache=[("resid", 99)])
    with pytest.raises(ValueError, match="unknown site"):
        model.text.run(model.tokenizer(["a"]), cache=["residual"])
