"""Declared = imported (issue #18): every package the code imports at run time is a
declared dependency in pyproject.toml (``[project] dependencies``, or an extra such as
``s3`` for an import made only when its feature is used), and every declared dependency is
imported.

urllib3 was imported (and its 2.x API used) but not declared, so an environment with
urllib3 1.26, which requests allows, installed ohpub and then failed at the first transport
error. The scan reads every module's imports with ``ast``: module level and inside
functions, the modules named to ``lazy_import("...")`` (``model.lazy``: imported on first
use), but not under ``if TYPE_CHECKING:`` (those never run).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

tomllib = pytest.importorskip("tomllib")

IMPORT_NAME = {"typer": "typer", "requests": "requests", "rich": "rich", "tqdm": "tqdm"}
"""Distribution name -> import name, where they differ from the lowercased name."""


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = getattr(test, "id", None) or getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for sub in node.body:
                    hidden.update(id(n) for n in ast.walk(sub))
    return hidden


def _is_lazy_import(node: ast.AST) -> bool:
    """``lazy_import("requests")``: the module is imported on first use."""
    return (
        isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "lazy_import"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def runtime_imports(pkg: Path) -> dict[str, list[str]]:
    """Top-level names of the third-party modules the package imports at run time ->
    where (``path:line``)."""
    found: dict[str, list[str]] = {}
    for path in sorted(pkg.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        hidden = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            elif _is_lazy_import(node):
                names = [node.args[0].value]  # type: ignore[attr-defined]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("__future__", "ohpub"):
                    continue
                where = f"{path.relative_to(pkg.parent)}:{node.lineno}"
                found.setdefault(top, []).append(where)
    return found


def declared() -> dict[str, str]:
    """Import name -> requirement, from [project] dependencies and the extras a user
    installs for a feature (not ``test``, the suite's own)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    reqs = list(project["dependencies"])
    reqs += [r for name, rs in extras.items() if name != "test" for r in rs]
    out = {}
    for req in reqs:
        dist = re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower()
        out[IMPORT_NAME.get(dist, dist.replace("-", "_"))] = req
    return out


def test_every_runtime_import_is_a_declared_dependency() -> None:
    deps = declared()
    missing = {m: w for m, w in runtime_imports(REPO / "ohpub").items() if m not in deps}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_urllib3_is_declared_at_the_version_the_byte_path_needs() -> None:
    req = declared()["urllib3"]
    m = re.search(r">=\s*(\d+)\.(\d+)", req)
    assert m and (int(m.group(1)), int(m.group(2))) >= (2, 2), req  # HTTPResponse.read1


def test_every_declared_dependency_is_imported() -> None:
    unused = set(declared()) - set(runtime_imports(REPO / "ohpub"))
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}"


def test_the_byte_path_uses_no_private_attribute_of_urllib3_or_http_client() -> None:
    """``raw._fp``, ``fp.length``, ``_sock`` and the like change between releases; the
    transfer layer reads bodies through urllib3's public API only."""
    private = re.compile(r"""[."'](_fp|_sock|_original_response|_connection)\b|\bfp\.length\b""")
    hits = [
        f"{p.relative_to(REPO)}:{i}"
        for layer in ("transfer", "remote")
        for p in sorted((REPO / "ohpub" / layer).rglob("*.py"))
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if private.search(line.split("#")[0])
    ]
    assert not hits, hits
