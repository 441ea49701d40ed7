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


@pytest.fixture(scope="session")
def tiny_clip_factory(tmp_path_factory):
    """``build(config=None, seed=0)``: a random-init open_clip model of an open_clip config dict, through
    ``load_model``.

    ``config=None`` is the ToyCLIP architecture (``toy_clip_config()``). Each (config, seed) is built once per
    session and shared, so tests must not modify the model (its weights and hooks are checked at the end of the
    session). The architecture is registered with open_clip under a name derived from the config, so different
    configs never collide; the name does not change the weights, which ``load_model`` draws from ``seed`` alone.
    """
    import hashlib
    import json

    import torch

    from clip_interp.demo.toy_clip import toy_clip_config
    from clip_interp.models import load_model

    folder = tmp_path_factory.mktemp("tiny_clip_configs")
    built, originals = {}, {}

    def build(config=None, seed=0):
        config = toy_clip_config() if config is None else config
        text = json.dumps(config, sort_keys=True)
        if (text, seed) not in built:
            path = folder / f"TinyCLIP-{hashlib.sha1(text.encode()).hexdigest()[:12]}.json"
            path.write_text(text)
            spec = {"backend": "open_clip", "name": path.stem, "config": str(path), "random_init": True, "seed": seed}
            model = load_model(spec, "cpu")
            built[(text, seed)] = model
            originals[(text, seed)] = {k: v.detach().clone() for k, v in model.source_model.state_dict().items()}
        return built[(text, seed)]

    yield build
    problems = []  # a test that changed a shared model would silently change the other tests' numbers
    for key, model in built.items():
        state = model.source_model.state_dict()
        changed = [k for k, v in originals[key].items() if not torch.equal(state[k], v)]
        hooked = [n or "<model>" for n, m in model.source_model.named_modules()
                  if m._forward_hooks or m._forward_pre_hooks]
        if changed or hooked:
            problems.append(f"{model.spec['name']}: weights changed {changed}, hooks left on {hooked}")
    assert not problems, "a test modified a shared tiny model: " + "; ".join(problems)


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_factory):
    """The ToyCLIP architecture (``toy_clip_config()``), random-initialised with seed 0; shared, do not modify."""
    return tiny_clip_factory()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The reduced demo (``workflow_runs.SMALL_DEMO``, every study) run once per session: a ``DemoRun``
    (workdir, config). Tests only read it (configs they write go elsewhere); one that re-runs or changes results
    takes ``demo_run_copy``. At the end of the session its results must be as the run left them."""
    from workflow_runs import results_state, run_reduced_demo

    run = run_reduced_demo(tmp_path_factory.mktemp("demo"))
    finished = results_state(run.workdir)
    yield run
    now = results_state(run.workdir)
    changed = sorted(name for name in finished.keys() | now.keys() if finished.get(name) != now.get(name))
    assert not changed, f"a test changed the shared demo run's results: {changed[:10]}"


@pytest.fixture
def demo_run_copy(demo_run, tmp_path):
    """A copy of the session's reduced demo run, for a test that re-runs rules or changes results."""
    from workflow_runs import copy_run

    return copy_run(demo_run, tmp_path / "demo_copy")


@pytest.fixture(scope="session")
def biased_clip(tiny_clip):
    """A copy of the tiny model with random LayerNorm weights and biases and attention/MLP biases (random init
    leaves them 1 and 0, which would hide a mishandled bias or LayerNorm scale)."""
    import copy

    import torch

    from clip_interp.models.loading import hook_open_clip

    model = copy.deepcopy(tiny_clip.source_model)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in model.visual.named_parameters():
            if name.endswith("bias") or ("ln" in name and name.endswith("weight")):
                parameter.copy_(parameter + 0.3 * torch.randn(parameter.shape, generator=g))
    return hook_open_clip(model, tiny_clip.tokenizer, tiny_clip.preprocess, tiny_clip.spec, tiny_clip.device)
