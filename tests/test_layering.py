"""The package's layering and the house rules the imports must keep, read from the source with ``ast``.

* Layers: the core (every module outside the study and demo packages) imports no study and not the demo;
  a study (``negation``, ``decomposition``, ``heads``) imports the core and itself only; the demo imports
  anything in the package. Imports inside functions count, relative imports are resolved.
* No file (package, rule scripts, tools, tests, rule files) uses another module's private name: neither
  ``from x import _y`` nor ``x._y`` on a name bound by an import from a project module.
* The package's modules import each other without a cycle (module-level and in-function imports alike).
* No function in the package is longer than :data:`MAX_FUNCTION_LINES` lines.
* No file edits ``sys.path``.

Each test lists every violation as ``file:line what``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"
PACKAGE = SCRIPTS / "clip_interp"
STUDIES = ("negation", "decomposition", "heads")
DEMO = "demo"
MAX_FUNCTION_LINES = 80
# Folders whose Python files are checked for private names besides the package: each folder's own
# top-level modules (e.g. tools/synthetic_images.py, tests/heads_results.py) are project modules too.
SCRIPT_FOLDERS = (SCRIPTS, REPO / "tools", REPO / "tests")


@dataclass(frozen=True)
class Import:
    """One imported name: ``module`` (absolute, relative imports resolved), the ``name`` taken from it
    (None for ``import module``), the local name it is bound to and the line."""

    module: str
    name: str | None
    bound: str
    line: int

    @property
    def target(self) -> str:
        """The dotted name imported: ``module.name``, or ``module`` for ``import module``."""
        return f"{self.module}.{self.name}" if self.name else self.module


def module_name(path: Path, root: Path = SCRIPTS) -> str:
    """The dotted module name of ``path`` below ``root`` (a package's ``__init__.py`` is the package)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports_of(path: Path, module: str | None = None) -> list[Import]:
    """Every import statement of ``path``, at module level or inside functions, one row per imported name."""
    module = module if module is not None else module_name(path)
    package = _package_of(module, path)
    rows = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                imported = alias.name if alias.asname else alias.name.split(".")[0]
                rows.append(Import(alias.name, None, bound, node.lineno))
                if not alias.asname and imported != alias.name:
                    rows.append(Import(imported, None, bound, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                rows.append(Import(source, alias.name, alias.asname or alias.name, node.lineno))
    return rows


def package_modules() -> dict[str, Path]:
    """Every module of the package by its dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    """``core``, a study's name or ``demo`` for a module of the package."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in (*STUDIES, DEMO):
        return parts[1]
    return "core"


def is_private(name: str) -> bool:
    """A name with a leading underscore that is not a dunder (``_y``, ``__y``; not ``__all__``)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def resolved_targets(imp: Import, modules: dict[str, Path]) -> list[str]:
    """The package modules an import names: ``from p import m`` is module ``p.m`` when that is a module,
    else the package ``p`` itself."""
    if imp.name and imp.target in modules:
        return [imp.target]
    return [imp.module] if imp.module in modules else []


def allowed(importer: str, imported: str) -> bool:
    """Whether a module of layer ``importer`` may import one of layer ``imported``."""
    if importer == DEMO:
        return True
    if importer == "core":
        return imported == "core"
    return imported in ("core", importer)


def layering_violations() -> list[str]:
    modules = package_modules()
    lines = []
    for module, path in modules.items():
        for imp in imports_of(path, module):
            for target in resolved_targets(imp, modules):
                if not allowed(layer_of(module), layer_of(target)):
                    lines.append(f"{path.relative_to(REPO)}:{imp.line} {layer_of(module)} imports "
                                 f"{layer_of(target)}: {target}")
    return lines


def test_the_core_imports_no_study_and_no_study_imports_another_or_the_demo():
    violations = layering_violations()
    assert not violations, "layering violations:\n" + "\n".join(violations)
    assert len(package_modules()) > 20


def test_the_resolver_sees_relative_study_imports():
    """Guard the guard: relative imports of a study's own modules and of the core are resolved."""
    names = {imp.target for imp in imports_of(PACKAGE / "negation" / "image_ablation.py")}
    modules = {imp.module for imp in imports_of(PACKAGE / "negation" / "image_ablation.py")}
    assert "clip_interp.negation.caches" in modules | names and "clip_interp.interventions" in modules | names


def test_the_layer_rule_refuses_each_forbidden_direction():
    assert allowed("demo", "negation") and allowed("demo", "core") and allowed("heads", "core")
    assert allowed("heads", "heads") and not allowed("heads", "decomposition")
    assert not allowed("core", "negation") and not allowed("core", "demo") and not allowed("negation", "demo")
    assert layer_of("clip_interp.demo.toy_clip") == "demo" and layer_of("clip_interp.store") == "core"


# ---- private names ----


def checked_files() -> list[tuple[Path, str]]:
    """Every Python file checked for private names, with its module name."""
    files = [(path, module_name(path)) for path in sorted(PACKAGE.rglob("*.py"))]
    for folder in SCRIPT_FOLDERS:
        files += [(path, module_name(path, folder)) for path in sorted(folder.rglob("*.py"))
                  if PACKAGE not in path.parents]
    return files


def project_modules() -> set[str]:
    """The package's modules and the top-level modules of the script folders (tools, tests, rule scripts)."""
    return {module for _, module in checked_files()} | {"clip_interp"}


def _is_project(module: str, projects: set[str]) -> bool:
    return module in projects or module.split(".")[0] == "clip_interp"


def _dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; None when the chain does not start with a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _private_attribute(node: ast.AST, bound: dict[str, str]) -> str | None:
    """``module._y`` (absolute) when ``node`` is an attribute ``x._y`` or ``x.y._z`` of an import-bound name ``x``."""
    if not isinstance(node, ast.Attribute):
        return None
    chain = _dotted(node)
    if chain and chain[0] in bound and is_private(chain[-1]):
        return ".".join([bound[chain[0]], *chain[1:]])
    return None


def _private_by_string(node: ast.AST, bound: dict[str, str], projects: set[str]) -> str | None:
    """``module._y`` when ``node`` is ``getattr/setattr/hasattr/delattr(x, "_y", ...)`` on an import-bound
    name ``x``, or ``monkeypatch.setattr("module._y", ...)``."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = _dotted(node.func)
    if not func or func[-1] not in ("getattr", "setattr", "hasattr", "delattr"):
        return None
    first = node.args[0]
    second = node.args[1] if len(node.args) > 1 else None
    if (isinstance(first, ast.Name) and first.id in bound and isinstance(second, ast.Constant)
            and isinstance(second.value, str) and is_private(second.value)):
        return f"{bound[first.id]}.{second.value}"
    if isinstance(first, ast.Constant) and isinstance(first.value, str) and "." in first.value:
        owner, name = first.value.rsplit(".", 1)
        if _is_project(owner, projects) and is_private(name):
            return first.value
    return None


def private_name_uses(path: Path, module: str, projects: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every private name of another project module that ``path`` uses: imported by name,
    reached as an attribute of a name bound by an import from a project module, or named by a string to
    ``getattr`` / ``setattr`` / ``monkeypatch.setattr``."""
    uses = []
    bound = {}
    for imp in imports_of(path, module):
        if not _is_project(imp.module, projects):
            continue
        if any(is_private(part) for part in imp.target.split(".")):
            uses.append((imp.line, imp.target))
        bound[imp.bound] = imp.target
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        name = _private_attribute(node, bound) or _private_by_string(node, bound, projects)
        if name:
            uses.append((node.lineno, name))
    return sorted(set(uses))


def _attribute_uses_in_chain(uses: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """One row per line and name: ``a._b._c`` reached once reports ``a._b._c`` only, not also ``a._b``."""
    return [(line, name) for line, name in uses
            if not any(other != name and other.startswith(name + ".") and other_line == line
                       for other_line, other in uses)]


RULE_FILE_IMPORT = re.compile(r"^\s*from\s+(clip_interp[\w.]*)\s+import\s+(.+)$", re.MULTILINE)


def rule_file_private_imports() -> list[str]:
    """``from clip_interp... import _y`` in the Snakefile and the rule files (not Python, read line by line)."""
    lines = []
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        text = path.read_text()
        for match in RULE_FILE_IMPORT.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            names = [name.strip().split(" as ")[0] for name in match.group(2).strip("() ").split(",")]
            lines += [f"{path.relative_to(REPO)}:{line} {match.group(1)}.{name}" for name in names if is_private(name)]
    return lines


def private_name_violations() -> list[str]:
    projects = project_modules()
    lines = []
    for path, module in checked_files():
        for line, name in _attribute_uses_in_chain(private_name_uses(path, module, projects)):
            lines.append(f"{path.relative_to(REPO)}:{line} {name}")
    return lines + rule_file_private_imports()


def test_no_file_uses_another_modules_private_names():
    violations = private_name_violations()
    assert not violations, f"{len(violations)} uses of another module's private name:\n" + "\n".join(violations)


def test_the_private_name_check_finds_each_form(tmp_path):
    """Guard the guard: every form of reaching a private name of a project module is found."""
    source = tmp_path / "user.py"
    source.write_text(
        "import clip_interp.store as store\n"
        "from clip_interp.io import _hidden, public\n"
        "from clip_interp import plotting\n"
        "import numpy as np\n"
        "def f(monkeypatch):\n"
        "    from clip_interp.negation import engine\n"
        "    engine._cache.clear()\n"
        "    getattr(plotting, '_style')\n"
        "    monkeypatch.setattr('clip_interp.sources._download', None)\n"
        "    np._private, public.__doc__, store.Store\n"
    )
    uses = private_name_uses(source, "user", {"user"})
    assert [name for _, name in _attribute_uses_in_chain(uses)] == [
        "clip_interp.io._hidden", "clip_interp.negation.engine._cache", "clip_interp.plotting._style",
        "clip_interp.sources._download"]


# ---- import cycles ----


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at module level or inside functions)."""
    modules = package_modules()
    graph = {module: set() for module in modules}
    for module, path in modules.items():
        for imp in imports_of(path, module):
            graph[module].update(t for t in resolved_targets(imp, modules) if t != module)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def test_no_import_cycle_among_the_packages_modules():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(cycle) for cycle in cycles)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


# ---- function length ----


def long_functions() -> list[str]:
    """``file:line name (n lines)`` of every function of the package longer than MAX_FUNCTION_LINES,
    counted from its ``def`` line to its last line (docstring included, decorators not)."""
    lines = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    lines.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    return lines


def test_no_function_in_the_package_is_longer_than_80_lines():
    offenders = long_functions()
    assert not offenders, f"functions longer than {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


# ---- sys.path ----


def test_no_file_edits_sys_path():
    offenders = []
    for pattern in ("**/*.py", "**/*.smk", "Snakefile"):
        for path in REPO.glob(pattern):
            if ".git" in path.parts or "results" in path.parts:
                continue
            if "sys.path" in path.read_text() and path.name != "test_layering.py":
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
