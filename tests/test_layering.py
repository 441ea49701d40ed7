"""The package's layering: the core imports no study, a study imports no other study, nothing edits sys.path."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "clip_interp"
REPO = PACKAGE.parents[2]
STUDIES = ("negation", "decomposition", "heads")


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the clip_interp modules that ``path`` imports (relative imports resolved)."""
    module = ".".join(("clip_interp", *path.relative_to(PACKAGE).with_suffix("").parts))
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return {n for n in names if n.startswith("clip_interp")}


def _study_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STUDIES else None


def test_the_core_imports_no_study_and_studies_import_no_other_study():
    checked = 0
    for path in PACKAGE.rglob("*.py"):
        owner = _study_of(".".join(("clip_interp", *path.relative_to(PACKAGE).parts)))
        for name in _imported_modules(path):
            study = _study_of(name)
            assert study is None or study == owner, f"{path.relative_to(PACKAGE)} imports {name}"
        checked += 1
    assert checked > 20


def test_the_resolver_sees_relative_study_imports(tmp_path):
    """Guard the guard: a relative import of a study from a core module is found."""
    names = _imported_modules(PACKAGE / "negation" / "image_ablation.py")
    assert "clip_interp.negation.caches" in names and "clip_interp.interventions" in names


def test_no_file_edits_sys_path():
    offenders = []
    for pattern in ("**/*.py", "**/*.smk", "Snakefile"):
        for path in REPO.glob(pattern):
            if ".git" in path.parts or "results" in path.parts:
                continue
            if "sys.path" in path.read_text() and path.name != "test_layering.py":
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
