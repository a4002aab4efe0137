"""The product's source stays easy to read and its map stays true: no module over 300
lines, no function over 60, and every module named in docs/architecture.md's table of
folders (so a new module gets a place in the map, not just a file)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("api", "worker", "shared", "resnet_serve/cli", "resnet_serve/client")
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def product_modules() -> list[Path]:
    modules = [path for top in PRODUCT for path in sorted((ROOT / top).rglob("*.py"))]
    return [path for path in modules if "__pycache__" not in path.parts]


def test_the_product_has_modules_to_check() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in product_modules()}
    assert {"api/app.py", "worker/redis_worker.py", "shared/settings.py"} <= names


@pytest.mark.parametrize("path", product_modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_modules_and_functions_stay_small(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, "split it by concern"
    long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def folder_rows() -> dict[str, str]:
    """docs/architecture.md's "Inside the folders" table: folder -> what its row says."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    return dict(re.findall(r"^\| `([\w/]+/)` \| (.+) \|$", text, re.MULTILINE))


def test_every_product_module_has_a_place_in_the_architecture_map() -> None:
    rows = folder_rows()
    unmapped = [
        path.relative_to(ROOT).as_posix()
        for path in product_modules()
        if path.name != "__init__.py"
        and f"`{path.name}`" not in rows.get(path.parent.relative_to(ROOT).as_posix() + "/", "")
    ]
    assert unmapped == [], "name each in its folder's row of docs/architecture.md"
