"""Package layout rules: no module reaches into another module's private names."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("egltheory", "experiments", "benchmarks") for p in (ROOT / d).rglob("*.py")]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def cross_module_private_uses(path: Path) -> list[str]:
    """``from egltheory.x import _y`` and ``module._y`` on an imported egltheory module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("egltheory"):
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{path.name}:{node.lineno} imports {node.module}.{alias.name}")
                else:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("egltheory"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and _private(node.attr)
        ):
            found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_no_cross_module_private_names():
    offences = [o for p in SOURCES for o in cross_module_private_uses(p)]
    assert not offences, offences


def test_the_check_catches_both_forms(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from egltheory.eglpp import _first, nnx_apply\n"
        "from egltheory import tsne\n"
        "tsne._check_common(1, 2.0, 'bits', 1e-5, 8)\n"
        "x = nnx_apply.__doc__\n"
    )
    found = cross_module_private_uses(bad)
    assert len(found) == 2 and "_first" in found[0] and "tsne._check_common" in found[1]
