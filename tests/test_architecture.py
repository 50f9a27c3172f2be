"""The package tree is the map: every module in docs/architecture.md, layers, no cycles."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest

from helpers import REPO

PACKAGE = REPO / "neuroflow_recover"
# a module may import from its own layer or an earlier one (docs/architecture.md, "Layers")
LAYERS = [
    "base", "classify", "workflow", "logs", "step", "queue", "notify", "recover", "cli",
    "logger_plugin",
]  # fmt: skip


def modules() -> dict[str, ast.Module]:
    """Dotted name -> parsed source of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules that `name` imports (lazy imports in functions included)."""
    is_package = f"{name}.__init__" in known or (PACKAGE / name.split(".", 1)[-1].replace(".", "/")).is_dir()
    here = name.split(".") if is_package else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.add(full if full in known else target)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in known and m != name}


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "base"


def test_every_module_is_in_the_module_map():
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    mapped = set(re.findall(r"^\| `([\w/.]+\.(?:py|yaml))` \|", text, re.M))
    files = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*")
        if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts
    }
    mapped = {m.removeprefix("neuroflow_recover/") for m in mapped}
    assert sorted(files - mapped) == [], "missing from the module map of docs/architecture.md"
    assert sorted(mapped - files) == [], "in the module map but not in the package"


def test_no_import_cycle_and_layers_respected():
    trees = modules()
    graph = {name: imports(name, tree, set(trees)) for name, tree in trees.items()}
    upward = [
        f"{name} -> {dep}"
        for name, deps in graph.items()
        for dep in deps
        if LAYERS.index(layer(dep)) > LAYERS.index(layer(name))
    ]
    assert upward == []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                pytest.fail("import cycle: " + " -> ".join(path[path.index(dep) :] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_every_module_says_what_it_holds_in_its_first_line():
    for name, tree in modules().items():
        doc = ast.get_docstring(tree)
        assert doc, f"{name} has no module docstring"
        assert len(doc.splitlines()[0]) <= 100, name


def test_the_snakefile_imports_neither_sqlalchemy_nor_click():
    code = (
        "import sys\n"
        "import neuroflow_recover.step.resources, neuroflow_recover.workflow.containers\n"
        "import neuroflow_recover.step.resource_plan\n"
        "import neuroflow_recover.workflow.dag_speed, neuroflow_recover.workflow.sheet\n"
        "print(sorted(m for m in ('sqlalchemy', 'click', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    used = set()
    for path in (REPO / "workflow").rglob("*.smk"):
        used |= set(re.findall(r"^from (neuroflow_recover[\w.]*) import", path.read_text(), re.M))
    assert used <= {
        "neuroflow_recover",  # environment
        "neuroflow_recover.errors",
        "neuroflow_recover.step.resource_plan",
        "neuroflow_recover.step.resources",
        "neuroflow_recover.workflow",
        "neuroflow_recover.workflow.config",
        "neuroflow_recover.workflow.layout",
        "neuroflow_recover.workflow.sheet",
    }


def test_every_package_is_installed():
    """pyproject.toml lists the packages (the logger plugin's mapping needs the list)."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])  # fmt: skip
    found = {
        ".".join(path.parent.relative_to(REPO).parts) for path in PACKAGE.rglob("__init__.py")
    }
    assert found <= listed and listed - found == {"snakemake_logger_plugin_neuroflow"}
