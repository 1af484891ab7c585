"""The package's shape: no import cycle, imports only downwards through the layers, nothing
imports a command-line module, Hydra known to one adapter only; every third-party import a
declared dependency, every package and the configs in the wheel."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGE = ROOT / "gpt_lightning"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports, at the top or inside functions."""
    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            found.update(n for n in [target, *names] if n.startswith("gpt_lightning"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("gpt_lightning"))
    modules = {_module(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != here}


def test_no_import_cycles():
    graph = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    graph = {m: {d for d in deps if d != "gpt_lightning"} for m, deps in graph.items()}  # the package facade
    done, path = set(), []

    def visit(module):
        if module in path:
            cycle = path[path.index(module):] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


# The layers, lowest first. A module may import its own layer and the ones below, never one above
# (function-level imports count too). quantize reads GPT-2-layout files with weights/hf_io, so it
# sits with weights; the rest of the top-level modules are the core every layer may use.
LAYERS = [
    ("core", ["errors", "atomic", "progress", "download", "model", "linear_cross_entropy", "precision", "classifier", "tokenizer", "lora"]),
    ("config", ["config"]),
    ("data, weights", ["data", "weights", "quantize"]),
    ("generate", ["generate"]),
    ("evaluate", ["evaluate"]),
    ("runs", ["runs"]),
    ("train", ["train"]),
    ("serve", ["serve"]),
    ("cli", ["cli"]),
]


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return len(LAYERS)  # the package facade (gpt_lightning/__init__.py) re-exports from any layer
    for rank, (_, tops) in enumerate(LAYERS):
        if parts[1] in tops:
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_structure.py")


def test_imports_go_down_the_layers():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        module = _module(path)
        for dep in _imports(path):
            if dep != "gpt_lightning" and _layer(dep) > _layer(module):
                upward.append(f"{module} ({LAYERS[_layer(module)][0]}) imports {dep} ({LAYERS[_layer(dep)][0]})")
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_nothing_imports_a_command_line_module():
    importers = sorted(_module(p) for p in PACKAGE.rglob("*.py") if not _module(p).startswith("gpt_lightning.cli")
                       and any(d.startswith("gpt_lightning.cli") for d in _imports(p)))
    assert importers == []


def _third_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_adapter_knows_hydra():
    importers = sorted(_module(p) for p in PACKAGE.rglob("*.py") if "hydra" in _third_party_imports(p))
    assert importers == ["gpt_lightning.cli.hydra_adapter"]
    readers = sorted(p.name for p in PACKAGE.rglob("*.py") if "HydraConfig" in p.read_text())
    assert readers == ["hydra_adapter.py"]


def test_entry_scripts_are_thin():
    for script in ("train.py", "finetune.py", "generate.py", "serve.py", "evaluate.py", "prepare.py"):
        lines = [line for line in (ROOT / script).read_text().splitlines() if line.strip()]
        assert len(lines) <= 20, script


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_third_party_import_is_a_declared_dependency():
    """An AST scan of the package's imports against pyproject.toml (dependencies, or an extra for
    the optional ones: serve's fastapi ...); import names map to distributions as installed here."""
    project = _pyproject()["project"]
    declared = {_name(r) for r in project["dependencies"]}
    declared |= {_name(r) for extra in project["optional-dependencies"].values() for r in extra}
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for path in PACKAGE.rglob("*.py"):
        for top in _third_party_imports(path) - set(sys.stdlib_module_names) - {"gpt_lightning", "__main__"}:
            names = {_name(d) for d in distributions.get(top, [top])}
            if not names & declared:
                missing.append(f"{_module(path)} imports {top} ({', '.join(sorted(names))})")
    assert not missing, "undeclared in pyproject.toml:\n" + "\n".join(sorted(missing))


def test_the_wheel_lists_every_package_and_ships_the_configs():
    tool = _pyproject()["tool"]["setuptools"]
    folders = {_module(p) for p in PACKAGE.rglob("__init__.py")}
    assert set(tool["packages"]) == folders | {"gpt_lightning.conf"}, "pyproject.toml [tool.setuptools] packages"
    assert tool["package-dir"] == {"gpt_lightning.conf": "conf"}
    assert not [p for p in PACKAGE.rglob("*.py") if not (p.parent / "__init__.py").is_file()], "a folder without __init__.py"
