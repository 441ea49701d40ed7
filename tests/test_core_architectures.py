"""Every supported CLIP architecture loads random-initialised and its hooked towers reproduce the library's forward.

open_clip's ViT-B-16, ViT-B-32 and ViT-L-14 come in two variants: OpenAI's checkpoints use QuickGELU
(``x * sigmoid(1.702 x)``, the ``-quickgelu`` model names) and the LAION/DataComp checkpoints the exact
GELU (the plain names). A loader that ignored the variant would still run but give other numbers, so
each case checks the MLP activation as well as the embeddings. The Hugging Face cases are
``CLIPConfig`` s of CLIP's B/32 and B/16 (QuickGELU, 224 px).
"""

import pytest
import torch
import torch.nn.functional as F

from clip_interp.models import load_model

SENTENCES = ["There are no people in the picture.", "There is a dog.", "There are some red circles on it."]
SEED = 0
TOL = 1e-5


def _case(backend, name, activation, patch, grid, large=False, slow=False):
    """One architecture; ``large`` ones get small batches, and ``large`` or ``slow`` ones run only in the full suite."""
    marks = [pytest.mark.slow] if large or slow else []
    return pytest.param((backend, name, activation, patch, grid, large), id=f"{backend}-{name}", marks=marks)


ARCHITECTURES = [
    _case("open_clip", "ViT-B-32-quickgelu", "quick_gelu", 32, (7, 7)),
    _case("open_clip", "ViT-B-32", "gelu", 32, (7, 7)),
    _case("open_clip", "ViT-B-16-quickgelu", "quick_gelu", 16, (14, 14), slow=True),
    _case("open_clip", "ViT-B-16", "gelu", 16, (14, 14), slow=True),
    _case("open_clip", "ViT-L-14-quickgelu", "quick_gelu", 14, (16, 16), large=True),
    _case("open_clip", "ViT-L-14", "gelu", 14, (16, 16), large=True),
    _case("hf", "B-32", "quick_gelu", 32, (7, 7)),
    _case("hf", "B-16", "quick_gelu", 16, (14, 14), slow=True),
]

# The activation module classes each library uses for the two functions.
ACTIVATION_CLASSES = {
    ("open_clip", "quick_gelu"): "QuickGELU",
    ("open_clip", "gelu"): "GELU",
    ("hf", "quick_gelu"): "QuickGELUActivation",
    ("hf", "gelu"): "GELUActivation",
}


def _hf_folder(tmp_path_factory, patch: int):
    """A saved ``CLIPConfig`` of OpenAI's ViT-B/``patch`` (the HF defaults are B/32), QuickGELU in both towers."""
    from transformers import CLIPConfig

    folder = tmp_path_factory.mktemp(f"hf_clip_b{patch}")
    CLIPConfig(
        text_config={"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8,
                     "hidden_act": "quick_gelu"},
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                       "num_attention_heads": 12, "image_size": 224, "patch_size": patch, "hidden_act": "quick_gelu"},
        projection_dim=512,
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=ARCHITECTURES)
def arch(request, tmp_path_factory):
    """(hooked model, case); each architecture is built once per module and freed before the next."""
    backend, name, activation, patch, grid, large = request.param
    if backend == "open_clip":
        spec = {"backend": "open_clip", "name": name, "random_init": True, "seed": SEED}
    else:
        spec = {"backend": "hf", "name": name, "path": str(_hf_folder(tmp_path_factory, patch)),
                "random_init": True, "seed": SEED}
    model = load_model(spec, "cpu")
    yield model, dict(backend=backend, name=name, activation=activation, patch=patch, grid=grid, large=large)
    del model


def _inputs(model, case):
    n_text, n_image = (2, 1) if case["large"] else (3, 2)
    ids = model.tokenizer(SENTENCES[:n_text], length=77)
    generator = torch.Generator().manual_seed(SEED)
    pixels = torch.randn(n_image, 3, model.image_size, model.image_size, generator=generator)
    return ids, pixels


def _features(output):
    """transformers 5 returns an output object from ``get_*_features``; 4.x a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _library(model, ids, pixels):
    src = model.source_model
    if model.spec["backend"] == "open_clip":
        return src.encode_text(ids), src.encode_image(pixels)
    return _features(src.get_text_features(input_ids=ids)), _features(src.get_image_features(pixel_values=pixels))


def _activation_module(mlp):
    """The one non-Linear, parameter-free submodule of a block's MLP (its activation)."""
    found = [m for m in mlp.modules() if m is not mlp and not isinstance(m, torch.nn.Linear)
             and not list(m.children()) and not list(m.parameters(recurse=False))]
    assert len(found) == 1, f"expected one activation in {mlp}, found {found}"
    return found[0]


def test_architecture_is_the_one_asked_for(arch):
    model, case = arch
    assert model.image_size == 224
    src = model.source_model
    if case["backend"] == "open_clip":
        assert src.visual.conv1.kernel_size == (case["patch"], case["patch"])
        text_width, vision_width = src.transformer.width, src.visual.transformer.width
    else:
        assert src.config.vision_config.patch_size == case["patch"]
        text_width, vision_width = src.config.text_config.hidden_size, src.config.vision_config.hidden_size
    assert model.text.d_model == text_width and model.vision.d_model == vision_width
    large = case["name"].startswith("ViT-L")
    assert (model.text.n_layers, model.vision.n_layers) == ((12, 24) if large else (12, 12))
    assert (model.text.n_heads, model.vision.n_heads) == ((12, 16) if large else (8, 12))


@pytest.mark.parametrize("tower", ["text", "vision"])
def test_mlp_activation_is_the_variants(arch, tower):
    """QuickGELU for OpenAI's CLIP, exact GELU for the LAION/DataComp names: class and function."""
    model, case = arch
    expected = ACTIVATION_CLASSES[(case["backend"], case["activation"])]
    others = {cls for (backend, act), cls in ACTIVATION_CLASSES.items()
              if backend == case["backend"] and act != case["activation"]}
    x = torch.linspace(-4, 4, 101)
    reference = x * torch.sigmoid(1.702 * x) if case["activation"] == "quick_gelu" else F.gelu(x)
    other = F.gelu(x) if case["activation"] == "quick_gelu" else x * torch.sigmoid(1.702 * x)
    for block in getattr(model, tower).blocks:
        act = _activation_module(block.mlp)
        assert type(act).__name__ == expected and type(act).__name__ not in others
        torch.testing.assert_close(act(x), reference, atol=1e-6, rtol=0)
        assert (act(x) - other).abs().max() > 1e-2  # the two functions are told apart


@torch.no_grad()
def test_hooked_towers_match_the_library(arch):
    model, case = arch
    ids, pixels = _inputs(model, case)
    lib_text, lib_image = _library(model, ids, pixels)
    text = model.encode_text(ids).embedding
    image = model.encode_image(pixels).embedding
    assert text.shape == lib_text.shape and image.shape == lib_image.shape
    torch.testing.assert_close(text, lib_text, atol=TOL, rtol=0)
    torch.testing.assert_close(image, lib_image, atol=TOL, rtol=0)
    assert lib_text.abs().max() > 1e-2 and lib_image.abs().max() > 1e-2  # not a degenerate all-zero output


def test_patch_grid(arch):
    model, case = arch
    assert model.vision.patch_size == case["patch"]
    assert tuple(model.vision.grid_size) == case["grid"]
    assert model.vision.has_class_token is True


# The uniform convention is checked on every full-size architecture in the full suite only; the fast
# suite checks it on the tiny model with random LayerNorm parameters and biases (test_decomposition.py).
@pytest.mark.parametrize("convention", ["per_component", pytest.param("uniform", marks=pytest.mark.slow)])
def test_decomposition_sums_to_the_image_embedding(arch, convention):
    """Embedding term + every (layer, head, source) term + attention biases + MLPs + LN bias = e, to 1e-5 relative."""
    from clip_interp.decomposition.components import decompose

    model, case = arch
    _, pixels = _inputs(model, case)
    with torch.no_grad():
        library = _library(model, model.tokenizer(SENTENCES[:1], length=77), pixels)[1]
    for sources in ("sum", "keep"):
        parts = decompose(model.vision, pixels, convention=convention, sources=sources)
        total = parts.total()
        relative = ((total - library).norm(dim=-1) / library.norm(dim=-1)).max().item()
        assert relative < 1e-5, (sources, relative)
    n_layers, n_heads = model.vision.n_layers, model.vision.n_heads
    n_tokens = case["grid"][0] * case["grid"][1] + 1
    assert parts.heads.shape == (len(pixels), n_layers, n_heads, n_tokens, library.shape[1])
    assert parts.heads.abs().amax(dim=(0, 2, 3, 4)).min() > 0  # every layer's heads contribute
