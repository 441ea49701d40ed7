"""The decomposition in the paper's units (terms divided by ||e||) and its class-token-to-class-token terms."""

import pytest
import torch
import torch.nn.functional as F

from clip_interp.contributions import decompose


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("convention", ["per_component", "uniform"])
def test_unit_terms_sum_to_the_unit_embedding(biased_clip, pixels, convention, one_thread):
    raw = decompose(biased_clip.vision, pixels, convention=convention)
    unit = raw.unit()
    library = biased_clip.source_model.encode_image(pixels)
    torch.testing.assert_close(unit.total(), F.normalize(library, dim=-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(unit.embedding_norm, library.norm(dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unit.heads * unit.embedding_norm.view(-1, 1, 1, 1), raw.heads, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(unit.class_attention * unit.embedding_norm.view(-1, 1, 1), raw.class_attention,
                               atol=1e-6, rtol=1e-5)
    assert unit.units == "unit" and unit.unit() is unit and raw.units == "raw"


@pytest.mark.parametrize("convention", ["per_component", "uniform"])
def test_class_attention_is_source_zero_summed_over_heads(biased_clip, pixels, convention, one_thread):
    """The class-token-to-class-token term equals the per-source decomposition's source 0 summed over heads, in
    both conventions (uniform: with the 1/T share of the layer's bias and LayerNorm share each source holds)."""
    summed = decompose(biased_clip.vision, pixels, convention=convention)
    kept = decompose(biased_clip.vision, pixels, convention=convention, sources="keep")
    expected = kept.heads[:, :, :, 0].sum(2)
    assert summed.class_attention.shape == (len(pixels), biased_clip.vision.n_layers, summed.embedding.shape[1])
    torch.testing.assert_close(summed.class_attention, expected, atol=1e-6, rtol=1e-5)
    assert (summed.class_attention - summed.heads.sum(2)).abs().max() > 1e-3  # a part of the heads, not all of them
    assert kept.class_attention is None


@pytest.fixture(scope="module")
def unit_table(biased_clip, pixels, one_thread):
    from clip_interp.decomposition.table import ComponentTable

    return ComponentTable.from_decompositions([decompose(biased_clip.vision, pixels, convention="uniform").unit()])


def test_paper_ablation_rows_replace_exactly_their_terms(unit_table):
    """The MLP group (embedding term and every MLP), the class-to-class attention terms of every layer and both,
    against the sums written out by hand."""
    from clip_interp.decomposition.classifier import ablated_embeddings, paper_ablations
    from clip_interp.decomposition.table import component_means

    terms, means = unit_table.arrays, component_means(unit_table)
    mlp_group, class_attention, both = paper_ablations(unit_table.n_layers, unit_table.n_heads)
    assert mlp_group.count() == (unit_table.n_layers + 1, mlp_group.count()[1])
    e = terms["embedding"]
    mlp_shift = (means["embedding_term"] - terms["embedding_term"]) + (means["mlps"] - terms["mlps"]).sum(1)
    class_shift = (means["class_attention"] - terms["class_attention"]).sum(1)
    torch.testing.assert_close(ablated_embeddings(terms, means, mlp_group), e + mlp_shift, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ablated_embeddings(terms, means, class_attention), e + class_shift, atol=1e-6,
                               rtol=1e-5)
    torch.testing.assert_close(ablated_embeddings(terms, means, both), e + mlp_shift + class_shift, atol=1e-6,
                               rtol=1e-5)


def test_class_attention_cannot_be_ablated_with_its_own_heads(unit_table):
    from clip_interp.decomposition.classifier import Ablation
    from clip_interp.errors import InputError

    heads = Ablation.layers(unit_table.n_layers, unit_table.n_heads, attention=[2])
    with pytest.raises(InputError, match=r"layers \[2\]"):
        heads.union(Ablation.class_attention_terms(unit_table.n_layers, unit_table.n_heads, [2]), "both")
    with pytest.raises(InputError, match="lacks"):
        from clip_interp.decomposition.classifier import ablated_embeddings
        from clip_interp.decomposition.table import component_means

        terms = {k: v for k, v in unit_table.arrays.items() if k != "class_attention"}
        ablated_embeddings(terms, component_means(unit_table),
                           Ablation.class_attention_terms(unit_table.n_layers, unit_table.n_heads))
