"""The per-rule conda environments (envs/*.yaml, `--sdm conda`) and the pip path (requirements.txt) name the same
packages with the same version constraints, so the two ways of running the workflow cannot drift apart."""

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]

# Only in requirements.txt: what runs Snakemake itself, the explorer or the tests, never a rule's job.
DRIVER_ONLY = {
    "snakemake": "runs the workflow; the jobs get its modules from Snakemake's script preamble",
    "jsonschema": "the config check in the Snakefile (clip_interp.config), before any job",
    "pytest": "the tests",
    "ruff": "the linter (`ruff check`), a development tool",
    "gradio": "the explorer app (`clip-interp explore`), which no rule runs",
    "playwright": "the explorer's browser test",
}
# Only in the conda environments: the interpreter, and pip for the environments' `pip:` section.
CONDA_ONLY = {"python", "pip"}


def requirements() -> dict[str, SpecifierSet]:
    found = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-e"):  # `-e .`: clip_interp itself, which the jobs import from workflow/scripts
            continue
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in found, f"requirements.txt lists {name} twice"
        found[name] = req.specifier
    return found


def conda_spec(entry: str) -> tuple[str, SpecifierSet]:
    """`numpy >=1.26` (conda MatchSpec with a version range) -> (numpy, >=1.26)."""
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", entry.strip())
    name, spec = match.group(1), match.group(2).replace(" ", "")
    assert not re.match(r"=[^=]", spec), f"{entry!r}: conda's fuzzy `=` has no pip equivalent; use == or a range"
    return canonicalize_name(name), SpecifierSet(spec)


def environment(path: Path) -> dict[str, SpecifierSet]:
    env = yaml.safe_load(path.read_text())
    found = {}

    def add(name, spec):
        assert name not in found, f"{path.name} lists {name} twice"
        found[name] = spec

    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                req = Requirement(line)
                add(canonicalize_name(req.name), req.specifier)
        elif dep.split()[0] not in CONDA_ONLY:
            add(*conda_spec(dep))
    return found


ENVS = sorted((REPO / "envs").glob("*.yaml"))


def test_there_are_environments():
    assert {p.name for p in ENVS} >= {"data.yaml", "model.yaml", "figures.yaml"}


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_every_environment_package_is_in_requirements_with_the_same_pins(env):
    pip = requirements()
    for name, spec in environment(env).items():
        assert name in pip, f"{env.name}: {name} is not in requirements.txt"
        assert spec == pip[name], (
            f"{name}: {env.name} has {str(spec) or 'no pin'!r}, requirements.txt {str(pip[name]) or 'no pin'!r}"
        )


def test_every_requirement_is_in_an_environment():
    in_envs = set().union(*(environment(env) for env in ENVS))
    missing = set(requirements()) - in_envs - set(DRIVER_ONLY)
    assert not missing, f"in requirements.txt but in no envs/*.yaml: {sorted(missing)}"
    assert set(DRIVER_ONLY) <= set(requirements()), "a driver-only package left requirements.txt; update DRIVER_ONLY"
    assert not set(DRIVER_ONLY) & in_envs, "a driver-only package is in an environment; update DRIVER_ONLY"


def test_every_environment_uses_the_same_python():
    pythons = set()
    for env in ENVS:
        deps = yaml.safe_load(env.read_text())["dependencies"]
        pythons |= {d.replace(" ", "") for d in deps if isinstance(d, str) and d.split()[0] == "python"}
    assert len(pythons) == 1, pythons
