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
