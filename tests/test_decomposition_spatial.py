"""Spatial maps (clip_interp.decomposition.spatial) on a tiny random-init CLIP with random LayerNorm parameters and
biases: head maps summed over heads are the layer maps, layers summed the model map, and the model map plus the
class-token terms plus the other terms is the unit embedding's projection on the text, exactly, in both
conventions; the long table and the heads chosen for the figure; the figure itself."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clip_interp.contributions import decompose
from clip_interp.decomposition.figures import spatial_map_grids
from clip_interp.decomposition.spatial import (
    SCOPES,
    file_spatial_maps,
    heads_to_draw,
    spatial_maps,
    spatial_table,
)
from clip_interp.errors import InputError


@pytest.fixture(scope="module")
def texts(biased_clip):
    g = torch.Generator().manual_seed(3)
    return F.normalize(torch.randn(2, biased_clip.vision.proj.shape[1], generator=g), dim=-1)


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("convention", ["per_component", "uniform"])
def test_maps_add_up_to_the_unit_embedding_on_each_text(biased_clip, pixels, texts, convention, one_thread):
    maps = spatial_maps(biased_clip.vision, pixels, texts, convention=convention)
    tower = biased_clip.vision
    rows, cols = tower.grid_size
    assert maps.heads.shape == (2, tower.n_layers, tower.n_heads, rows * cols, 2) and maps.grid == (rows, cols)
    torch.testing.assert_close(maps.heads.sum(dim=2), maps.layers(), atol=0, rtol=0)
    torch.testing.assert_close(maps.layers().sum(dim=1), maps.model(), atol=1e-6, rtol=1e-5)
    embedding = biased_clip.source_model.encode_image(pixels)
    cosine = F.normalize(embedding, dim=-1) @ texts.T  # the image-text cosine, e . t / ||e||
    torch.testing.assert_close(maps.embedding, cosine, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps.total(), cosine, atol=1e-5, rtol=1e-5)
    # the head maps are the per-source terms of patch tokens 1..T-1, in joint-space units divided by ||e||
    full = decompose(tower, pixels, convention=convention, sources="keep")
    norm = full.embedding.norm(dim=-1).view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(maps.heads, ((full.heads / norm) @ texts.T)[:, :, :, 1:], atol=1e-6, rtol=1e-4)
    assert maps.class_token.abs().max() > 0 and maps.other_terms.abs().max() > 0


def test_the_long_table_holds_every_scope_and_the_same_exact_sum(biased_clip, pixels, texts, one_thread):
    maps = spatial_maps(biased_clip.vision, pixels, texts, convention="uniform")
    table = spatial_table(maps, ["a", "b"], ["red", "blue"])
    tower = biased_clip.vision
    n_patches = tower.grid_size[0] * tower.grid_size[1]
    L, H = tower.n_layers, tower.n_heads
    per_pair = table.groupby(["image", "text", "scope"]).size().unstack()
    assert set(table["scope"]) == set(SCOPES) and len(per_pair) == 4
    assert (per_pair["head"] == L * H * n_patches).all() and (per_pair["layer"] == L * n_patches).all()
    assert (per_pair["model"] == n_patches).all() and (per_pair["class_token"] == L * H).all()
    assert (per_pair["other_terms"] == 1).all() and (per_pair["embedding"] == 1).all()
    pick = table[(table["image"] == "b") & (table["text"] == "red")]
    value = pick.set_index("scope")["value"]
    assert abs(value["model"].sum() + value["class_token"].sum() + value["other_terms"] - value["embedding"]) < 1e-5
    cell = pick[(pick["scope"] == "head") & (pick["layer"] == 2) & (pick["head"] == 1) & (pick["patch_row"] == 3)
                & (pick["patch_col"] == 5)]
    assert float(cell["value"].iloc[0]) == pytest.approx(float(maps.heads[1, 1, 1, 3 * tower.grid_size[1] + 5, 0]))
    assert pick[pick["scope"] == "model"]["layer"].isna().all() and pick[pick["scope"] == "layer"]["head"].isna().all()
    with pytest.raises(InputError, match="2 image names and 1 texts"):
        spatial_table(maps, ["a", "b"], ["red"])


def test_auto_heads_are_the_largest_sums_over_patches_of_the_last_layers(biased_clip, pixels, texts, one_thread):
    maps = spatial_maps(biased_clip.vision, pixels, texts, convention="uniform")
    table = spatial_table(maps, ["a", "b"], ["red", "blue"])
    L = biased_clip.vision.n_layers
    chosen = heads_to_draw(table, "a", "blue", "auto", L, 2, 3)
    sums = maps.heads[0, :, :, :, 1].sum(dim=-1)  # (L, H)
    sums[: L - 2] = float("-inf")  # only the last 2 layers compete
    best = torch.topk(sums.flatten(), 3).indices.tolist()
    assert chosen == [(i // sums.shape[1] + 1, i % sums.shape[1]) for i in best]
    assert heads_to_draw(table, "a", "blue", [[3, 0], [1, 2]], L, 2, 3) == [(3, 0), (1, 2)]


def test_file_maps_and_the_figure(biased_clip, texts, tmp_path, one_thread):
    path = tmp_path / "query.png"
    rgb = np.zeros((80, 64, 3), dtype=np.uint8)
    rgb[20:50, 10:40] = (215, 35, 35)
    Image.fromarray(rgb).save(path)
    maps = file_spatial_maps(biased_clip, [str(path), str(path)], texts, convention="per_component", batch_size=1)
    torch.testing.assert_close(maps.heads[0], maps.heads[1])
    table = spatial_table(maps, ["q", "q again"], ["red", "blue"])
    pictures = {"q": rgb[:64], "q again": rgb[:64]}
    heads = {(image, text): heads_to_draw(table, image, text, "auto", 3, 2, 2) for image in pictures
             for text in ("red", "blue")}
    outputs = [tmp_path / "maps.png", tmp_path / "maps.pdf"]
    spatial_map_grids(table, pictures, heads, 2, outputs, "tiny: spatial maps")
    assert all(p.stat().st_size > 1000 for p in outputs)
    with pytest.raises(InputError, match="missing"):
        file_spatial_maps(biased_clip, [str(tmp_path / "nope.png")], texts, convention="uniform")
