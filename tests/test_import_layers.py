"""The layers of ``support`` (see its package docstring): imports point only down.

Every ``import``/``from ... import`` in every module, at the top or inside a function, is resolved
to the ``support`` subpackage it names; a module may import its own subpackage and subpackages of
strictly lower layers. The checker is first shown to catch a planted violation, so a green run
means something.
"""

from __future__ import annotations

from pathlib import Path

import support
from support.infra.provenance import imported_modules

PACKAGE_ROOT = Path(support.__file__).resolve().parent


def layer_of(subpackage: str, layers: tuple[tuple[str, ...], ...]) -> int:
    for rank, members in enumerate(layers):
        if subpackage in members:
            return rank
    raise KeyError(subpackage)


def layer_violations(root: Path, layers: tuple[tuple[str, ...], ...]) -> list[str]:
    """Every import in the package at ``root`` that points sideways or up, plus modules outside a layer."""
    problems = []
    known = {name for members in layers for name in members}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts == ("__init__",):
            continue
        own = parts[0]
        if own not in known:
            problems.append(f"{path.relative_to(root)}: not in any layer; put it in one of {sorted(known)}")
            continue
        package = ".".join(("support",) + parts[:-1])  # what a relative import in this file is relative to
        for line, name in imported_modules(path.read_text(encoding="utf-8"), package):
            pieces = name.split(".")
            if pieces[0] != "support" or len(pieces) < 2:
                continue
            target = pieces[1]
            if target not in known:
                problems.append(f"{path.relative_to(root)}:{line} imports {name}, which is in no layer")
            elif target != own and layer_of(target, layers) >= layer_of(own, layers):
                problems.append(
                    f"{path.relative_to(root)}:{line} imports {name}: support.{own} may only import "
                    f"its own subpackage and lower layers"
                )
    return problems


def test_support_imports_point_down_the_layers() -> None:
    assert layer_violations(PACKAGE_ROOT, support.LAYERS) == []


def test_every_layer_is_a_subpackage() -> None:
    on_disk = {p.parent.name for p in PACKAGE_ROOT.glob("*/__init__.py")}
    assert on_disk == {name for members in support.LAYERS for name in members}
    assert sorted(p.name for p in PACKAGE_ROOT.glob("*.py")) == ["__init__.py"]


def _plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


LAYERS = (("infra",), ("core", "data"), ("models",))


def test_checker_catches_upward_sideways_and_lazy_imports(tmp_path: Path) -> None:
    root = _plant(tmp_path / "support", {
        "__init__.py": "",
        "infra/__init__.py": "",
        "infra/a.py": "from ..models.m import f\n",                    # up, relative
        "core/__init__.py": "",
        "core/c.py": "def g():\n    from support.data import d\n",     # sideways, lazy, absolute
        "data/__init__.py": "",
        "data/d.py": "from ..infra.a import x\nfrom .e import y\n",     # down and own: allowed
        "models/__init__.py": "",
        "models/m.py": "import support.core.c\nfrom ..data import d\n",  # down: allowed
        "stray.py": "",
    })
    problems = layer_violations(root, LAYERS)
    assert len(problems) == 3, problems
    assert any(p.startswith("infra/a.py:1 imports support.models.m") for p in problems)
    assert any(p.startswith("core/c.py:2 imports support.data:") for p in problems)
    assert any(p.startswith("stray.py: not in any layer") for p in problems)


def test_the_package_docstring_lists_every_module() -> None:
    """The docstring's module list is the map a reader starts from: it names every module, and only those."""
    on_disk = {".".join(p.relative_to(PACKAGE_ROOT).with_suffix("").parts) for p in PACKAGE_ROOT.glob("*/*.py")
               if p.name != "__init__.py"}
    listed = {line.split()[0] for line in support.__doc__.split("Modules\n-------\n")[1].splitlines() if line.strip()}
    assert listed == on_disk, {"not listed": sorted(on_disk - listed), "no such module": sorted(listed - on_disk)}
