"""Bad model entries stop with a message that names the entry and the fix."""

import pytest

from clip_interp.errors import InputError
from clip_interp.models import load_model, load_tokenizer


def test_unknown_backend():
    with pytest.raises(InputError, match="unknown backend 'tf'"):
        load_model({"backend": "tf", "name": "x"}, "cpu")
    with pytest.raises(InputError, match="unknown backend"):
        load_tokenizer({"backend": "tf", "name": "x"})


def test_missing_local_checkpoint(tmp_path):
    with pytest.raises(InputError, match="path .*does not exist"):
        load_model({"backend": "open_clip", "name": "ViT-B-32", "path": str(tmp_path / "absent.pt")}, "cpu")


def test_unknown_architecture_and_missing_weights():
    with pytest.raises(InputError, match="no architecture 'ViT-Nope'"):
        load_model({"backend": "open_clip", "name": "ViT-Nope", "random_init": True}, "cpu")
    with pytest.raises(InputError, match="give `pretrained`"):
        load_model({"backend": "open_clip", "name": "ViT-B-32"}, "cpu")


def test_model_config_must_match_name(tmp_path):
    config = tmp_path / "Other.json"
    config.write_text("{}")
    with pytest.raises(InputError, match="registers architecture 'Other'"):
        load_model({"backend": "open_clip", "name": "ToyCLIP", "config": str(config)}, "cpu")


@pytest.mark.parametrize("backend, name", [
    ("open_clip", "ViT-B-32"),
    pytest.param("hf", "random", marks=pytest.mark.slow),
])
def test_random_init_weights_are_the_same_in_every_load(backend, name):
    """Each rule loads the model anew; a random_init entry must give every rule the same weights."""
    import torch

    from clip_interp.models import load_model

    spec = {"backend": backend, "name": name, "random_init": True}
    first = load_model(spec, "cpu").source_model.state_dict()
    torch.manual_seed(123)
    second = load_model(spec, "cpu").source_model.state_dict()
    other = load_model({**spec, "seed": 1}, "cpu").source_model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())
