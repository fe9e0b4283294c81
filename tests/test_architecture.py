"""The package's shape: a curated public API, one direction of dependency, small modules and functions."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hjbcourse as hjb

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "hjbcourse"
MODULES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute hjbcourse module, imported names) for every relative or absolute import of the package."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("hjbcourse"):
                out.append((mod, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("hjbcourse")]
    return out


def test_all_is_curated_and_each_name_is_on_the_api_page():
    assert 40 <= len(hjb.__all__) <= 60, len(hjb.__all__)
    assert len(set(hjb.__all__)) == len(hjb.__all__)
    api = (ROOT / "book" / "api.md").read_text()
    for name in hjb.__all__:
        assert hasattr(hjb, name), name
        assert re.search(rf"`{re.escape(name)}`", api), f"{name} is exported but not on book/api.md"


def test_no_public_name_shadows_a_module():
    modules = {p.stem for p in MODULES if p.name != "__init__.py"} | {p.parent.name for p in PKG.rglob("__init__.py")}
    assert not set(hjb.__all__) & modules
    import hjbcourse.generator as g

    assert g.__name__ == "hjbcourse.generator"  # the module, not a function of the same name


def test_import_loads_no_plotting_symbolic_or_transport_library():
    probe = "import sys, hjbcourse; print(sorted(m for m in ('matplotlib', 'sympy', 'ot') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.strip()
    assert out == "[]", out
    assert hjb.plotting.__name__ == "hjbcourse.plotting"  # lazily, on first use
    assert hjb.derivations.__name__ == "hjbcourse.derivations"


# the layers of DESIGN.md, lowest first: a module may import its own layer and those below, never above
LAYERS = [
    {"_checks", "runtime", "checkpoint", "training", "metrics", "derivations"},
    {"exact"},      # closed forms take a problem's data, duck-typed; a problem's exact() returns one
    {"problems"},
    {"generator", "sde", "nets", "environment", "discrete", "diffusion"},
    {"solvers"},
    {"diagnostics", "plotting", "suite"},
    {"course"},
    {"cli", "__main__"},
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module} is in no layer of the architecture test")


@pytest.mark.parametrize("path", [p for p in MODULES if p != PKG / "__init__.py"], ids=lambda p: str(p.relative_to(PKG)))
def test_lower_layers_never_import_higher_ones_or_their_private_helpers(path):
    """Private helpers come only from the input contract (_checks), runtime, or the module's own package."""
    here = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for mod, names in _imports(path):
        if mod == "hjbcourse":
            continue
        assert _layer(mod) <= _layer(here), f"{here} imports {mod}, a higher layer"
        if mod.split(".")[1] not in (here.split(".")[1], "_checks", "runtime"):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{here} imports private helpers {private} of {mod}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_modules_and_functions_are_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 600, f"{path.name}: {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            assert n <= 80, f"{path.name}: {node.name} has {n} lines"


def test_solvers_hold_no_course_settings():
    for path in (PKG / "solvers").rglob("*.py"):
        text = path.read_text()
        assert "chapter_config" not in text and "_CHAPTER_SETTINGS" not in text, path.name
