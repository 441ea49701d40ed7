"""The core's decomposition operations (clip_interp.decompose) and the layer accessor, on a tiny random-init CLIP
whose vision blocks have a layer scale, random LayerNorm parameters and biases (so that no scale or bias can be
mishandled unseen): the stacked head terms, the final LayerNorm applied to terms under each convention, the
projection on directions, and the sum of the terms equal to the embedding."""

import copy

import pytest
import torch

from clip_interp.contributions import ClassTokenTerms, assemble_decomposition, check_options, decompose
from clip_interp.decompose import CONVENTIONS, FinalReadout, apply_final_ln, attention_bias_term, stack_head_terms
from clip_interp.demo.toy_clip import toy_clip_config
from clip_interp.errors import InputError
from clip_interp.models import layer_index

SITES = ["head_source_out", "attn_out", "mlp_out", "resid", "ln_final_mean", "ln_final_scale"]


@pytest.fixture(scope="module")
def scaled_clip(tiny_clip_factory):
    """A copy of the tiny model with a layer scale in every vision block, all perturbed with the biases and
    the LayerNorm weights (a layer scale starts uniform and the rest at 1 or 0)."""
    from clip_interp.models.loading import hook_open_clip

    base = tiny_clip_factory(toy_clip_config(vision_cfg={"ls_init_value": 0.5}))
    model = copy.deepcopy(base.source_model)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in model.visual.named_parameters():
            if name.endswith(("bias", "gamma")) or ("ln" in name and name.endswith("weight")):
                parameter.copy_(parameter + 0.3 * torch.randn(parameter.shape, generator=g))
    return hook_open_clip(model, base.tokenizer, base.preprocess, base.spec, base.device)


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def forward(scaled_clip, pixels, one_thread):
    """A full forward of the vision tower caching every site the terms are made of."""
    return scaled_clip.vision.run(pixels, cache=SITES)


def test_layer_index_and_block(scaled_clip):
    tower = scaled_clip.vision
    assert [layer_index(layer) for layer in range(1, tower.n_layers + 1)] == list(range(tower.n_layers))
    assert all(tower.block(layer) is tower.blocks[layer - 1] for layer in range(1, tower.n_layers + 1))
    with pytest.raises(ValueError, match="numbered from 1"):
        layer_index(0)
    with pytest.raises(ValueError, match="numbered from 1"):
        tower.block(0)


def test_the_model_has_a_nontrivial_layer_scale(scaled_clip):
    block = scaled_clip.vision.block(1)
    x = torch.ones(1, scaled_clip.vision.d_model)
    assert not isinstance(block.ls_1, torch.nn.Identity) and not torch.allclose(block.ls_1(x), x)


def test_stacked_head_terms_and_the_bias_make_the_attention_output(scaled_clip, forward, one_thread):
    """Summed over sources: the per-head terms; over heads: the map; over both, with ls_1(b_O): attn_out[cls]."""
    tower = scaled_clip.vision
    for layer in range(1, tower.n_layers + 1):
        site = forward.cache[("head_source_out", layer)]
        kept = stack_head_terms(tower, layer, site, "keep")
        assert kept.shape == site.shape
        torch.testing.assert_close(kept, tower.block(layer).ls_1(site), atol=0, rtol=0)
        torch.testing.assert_close(kept.sum(2), stack_head_terms(tower, layer, site, "sum"), atol=0, rtol=0)
        torch.testing.assert_close(kept.sum(1), stack_head_terms(tower, layer, site, "map"), atol=0, rtol=0)
        total = kept.sum(dim=(1, 2)) + attention_bias_term(tower, layer, site.device)
        torch.testing.assert_close(total, forward.cache[("attn_out", layer)][:, 0], atol=1e-5, rtol=1e-5)


def test_the_readout_reads_the_projection_and_the_mean(scaled_clip, forward):
    tower = scaled_clip.vision
    readout = FinalReadout.of(tower)
    gamma, beta, proj = (x.detach().float() for x in (tower.ln_final.weight, tower.ln_final.bias, tower.proj))
    torch.testing.assert_close(readout.matrix, gamma[:, None] * proj, atol=0, rtol=0)
    torch.testing.assert_close(readout.bias, beta @ proj)
    torch.testing.assert_close(readout.ones, torch.ones(tower.d_model) @ readout.matrix)
    terms = forward.cache[("mlp_out", 2)]
    read = readout.read(terms)
    torch.testing.assert_close(read.projection, terms @ readout.matrix, atol=0, rtol=0)
    torch.testing.assert_close(read.mean, terms.mean(dim=-1), atol=0, rtol=0)


def test_the_final_layernorm_of_the_whole_residual_is_the_embedding(scaled_clip, forward, pixels):
    """One term, r itself: ``per_component`` plus the LN bias, and ``uniform`` with share 1, both give e."""
    tower = scaled_clip.vision
    readout = FinalReadout.of(tower)
    n = tower.n_layers
    mean, scale = forward.cache[("ln_final_mean", n)], forward.cache[("ln_final_scale", n)]
    read = readout.read(forward.cache[("resid", n)][:, 0])
    embedding = forward.embedding.float()
    torch.testing.assert_close(apply_final_ln(read, readout, mean, scale, "per_component") + readout.bias, embedding)
    torch.testing.assert_close(apply_final_ln(read, readout, mean, scale, "uniform", share=1.0), embedding)
    torch.testing.assert_close(embedding, scaled_clip.source_model.encode_image(pixels), atol=1e-5, rtol=1e-5)


def _residual_terms(tower, cache) -> list[tuple[torch.Tensor, str]]:
    """Every term of the class token's final residual, (B, ..., D), with its group: the embedding, each layer's
    per-head, per-source terms and attention bias (broadcast over the batch), and each layer's MLP."""
    batch = cache[("resid", 0)].shape[0]
    terms = [(cache[("resid", 0)][:, 0], "embedding")]
    for layer in range(1, tower.n_layers + 1):
        terms.append((stack_head_terms(tower, layer, cache[("head_source_out", layer)]), "heads"))
        terms.append((attention_bias_term(tower, layer, "cpu").expand(batch, -1), "bias"))
        terms.append((cache[("mlp_out", layer)][:, 0], "mlp"))
    return terms


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_stacked_terms_through_the_final_layernorm_sum_to_the_embedding(scaled_clip, forward, convention):
    """``uniform``: shares 1/(2L+1) for the embedding term and each MLP, the same per attention layer split over
    its H x T (head, source) terms, and the bias spread over them with it (a bias term of its own then has
    share 0); ``per_component``: every term on its own mean, plus the LN bias once."""
    tower = scaled_clip.vision
    readout = FinalReadout.of(tower)
    n, group = tower.n_layers, 1.0 / (2 * tower.n_layers + 1)
    mean, scale = forward.cache[("ln_final_mean", n)], forward.cache[("ln_final_scale", n)]
    total = readout.bias.expand(len(scale), -1) if convention == "per_component" else 0
    for terms, kind in _residual_terms(tower, forward.cache):
        read = readout.read(terms)
        if kind == "heads":
            share = group / (terms.shape[1] * terms.shape[2])
            part = apply_final_ln(read, readout, mean, scale, convention, share).sum(dim=(1, 2))
        else:
            part = apply_final_ln(read, readout, mean, scale, convention, 0.0 if kind == "bias" else group)
        total = total + part
    torch.testing.assert_close(total, forward.embedding.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("sources", ["sum", "keep", "map"])
def test_terms_added_from_a_cache_assemble_to_the_embedding(scaled_clip, forward, pixels, convention, sources,
                                                            one_thread):
    """ClassTokenTerms filled by hand from a full forward's cache: the decomposition's total is the embedding,
    and its terms are those of ``decompose``'s one pooled-query forward."""
    tower = scaled_clip.vision
    n = tower.n_layers
    terms = ClassTokenTerms(tower, FinalReadout.of(tower), sources)
    terms.add_embedding(forward.cache[("resid", 0)])
    for layer in range(1, n + 1):
        terms.add_heads(layer, forward.cache[("head_source_out", layer)])
        terms.add_mlp(layer, forward.cache[("mlp_out", layer)])
    terms.add_statistics(forward.cache[("ln_final_mean", n)], forward.cache[("ln_final_scale", n)])
    parts = assemble_decomposition(tower, terms, forward.embedding.float(), convention)
    torch.testing.assert_close(parts.total(), forward.embedding.float(), atol=1e-5, rtol=1e-5)
    fast = decompose(tower, pixels, convention=convention, sources=sources)
    for name in ("embedding_term", "heads", "attn_bias", "mlps", "ln_bias", "embedding"):
        torch.testing.assert_close(getattr(fast, name), getattr(parts, name), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_projecting_on_directions_is_projecting_the_terms(scaled_clip, pixels, convention, one_thread):
    """On K directions every term is the joint-space term's projection, and the total the embedding's; on the
    identity directions the terms are the joint-space terms bit for bit."""
    tower = scaled_clip.vision
    plain = decompose(tower, pixels, convention=convention, sources="keep")
    directions = torch.randn(plain.embedding.shape[1], 4, generator=torch.Generator().manual_seed(2))
    projected = decompose(tower, pixels, convention=convention, sources="keep", directions=directions)
    for name in ("embedding_term", "heads", "attn_bias", "mlps", "ln_bias"):
        torch.testing.assert_close(getattr(projected, name), getattr(plain, name) @ directions, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(projected.total(), plain.embedding @ directions, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(projected.embedding, plain.embedding, atol=0, rtol=0)
    identity = torch.eye(plain.embedding.shape[1])
    assert torch.equal(FinalReadout.of(tower).on_directions(identity).matrix, FinalReadout.of(tower).matrix)
    same = decompose(tower, pixels, convention=convention, sources="keep", directions=identity)
    for name in ("embedding_term", "heads", "attn_bias", "mlps", "ln_bias"):
        assert torch.equal(getattr(same, name), getattr(plain, name)), name


def test_unknown_options_are_refused():
    with pytest.raises(InputError, match="convention"):
        check_options("paper", "sum")
    with pytest.raises(InputError, match="sources"):
        check_options("uniform", "all")
