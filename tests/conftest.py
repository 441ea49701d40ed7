import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SHARED_DATA = Path(os.environ.get("CLIP_INTERP_SHARED_DATA", REPO.parent / "shared" / "data"))
REQUIRE_SHARED = os.environ.get("CLIP_INTERP_REQUIRE_SHARED_DATA", "") not in ("", "0")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder beside the checkout; skipped (or failed in CI) when absent."""
    if not (SHARED_DATA / "valse" / "existence.json").exists():
        message = f"shared data not found at {SHARED_DATA} (set CLIP_INTERP_SHARED_DATA)"
        if REQUIRE_SHARED:
            pytest.fail(message + "; CLIP_INTERP_REQUIRE_SHARED_DATA is set, so this is an error")
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tok():
    """open_clip's bundled CLIP BPE tokenizer."""
    from clip_interp.tokenizers import default_tokenizer

    return default_tokenizer()


@pytest.fixture(scope="session")
def nlp():
    """The spaCy pipeline used for subject noun chunks."""
    from clip_interp.nlp import load_spacy

    return load_spacy()


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small forwards: on a shared CPU more threads mostly wait."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
