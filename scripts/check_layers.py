"""Check the layer contract of the ohpub package (run by .ci/run and tests/test_layers.py).

    python scripts/check_layers.py [PACKAGE_DIR]    # exit 1 and name every broken rule

The layers, top to bottom (ARCHITECTURE.md): a module may import its own layer and the
layers below it, never one above; packages that share a layer (``mirror`` and ``ops``,
``remote`` and ``local``) do not import each other. Every import counts: at module level,
inside a function (a lazy import), and under ``if TYPE_CHECKING:``, which may not import
ohpub at all (it would hide an arrow). No module below the public API imports the root
package ``ohpub`` (that would run the API from inside a layer), and the modules of the
package form no circle. Only the CLI imports typer, rich and tqdm.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS: list[tuple[str, ...]] = [
    ("ohpub.cli",),
    ("ohpub", "ohpub.library"),
    ("ohpub.mirror", "ohpub.ops"),
    ("ohpub.transfer",),
    ("ohpub.remote", "ohpub.local", "ohpub.bucket"),
    ("ohpub.model",),
]
"""Each tuple is one layer; its entries are packages (or modules) that are independent."""

CLI_ONLY = ("typer", "rich", "tqdm", "click", "shellingham")


def place(module: str) -> tuple[int, str]:
    """(layer index, owning unit) of a module of the package; the longest match wins."""
    if module == "ohpub.__main__":
        module = "ohpub.cli.__main__"  # ``python -m ohpub``: the CLI's entry point
    best: tuple[int, str] | None = None
    for i, layer in enumerate(LAYERS):
        for unit in layer:
            inside = module == unit or module.startswith(unit + ".")
            if inside and (best is None or len(unit) > len(best[1])):
                best = (i, unit)
    if best is None:
        raise SystemExit(f"check_layers: {module} is in no layer; add it to LAYERS")
    return best


def modules(pkg: Path) -> dict[str, Path]:
    root = pkg.parent
    found = {}
    for path in sorted(pkg.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported name, line, under TYPE_CHECKING) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for sub in node.body:
                hidden.update(id(n) for n in ast.walk(sub))
    is_pkg = path.name == "__init__.py"
    base_parts = module.split(".") if is_pkg else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, node.lineno, id(node) in hidden))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                keep = base_parts[: len(base_parts) - node.level + 1]
                base = ".".join(keep + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                full = f"{base}.{alias.name}"
                name = full if full in known else base
                found.append((name, node.lineno, id(node) in hidden))
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def check(pkg: Path) -> list[str]:
    """Every broken rule, as one line each (empty: the contract holds)."""
    mods = modules(pkg)
    known = set(mods)
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        layer, unit = place(mod)
        rel = path.relative_to(pkg.parent)
        for name, line, hidden in imports(mod, path, known):
            top = name.split(".")[0]
            if top in CLI_ONLY and not unit.startswith("ohpub.cli"):
                problems.append(f"{rel}:{line}: imports {name}; only the CLI may")
            if top != "ohpub":
                continue
            if hidden:
                problems.append(f"{rel}:{line}: imports {name} under TYPE_CHECKING")
            if name == "ohpub" and layer > 1:
                problems.append(f"{rel}:{line}: imports the package root from inside a layer")
                continue
            target = name
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target not in known:
                problems.append(f"{rel}:{line}: imports {name}, which does not exist")
                continue
            if target != mod and target != "ohpub":
                graph[mod].add(target)
            t_layer, t_unit = place(target)
            if t_layer < layer:
                problems.append(
                    f"{rel}:{line}: {unit} imports {target}, a higher layer ({t_unit})"
                )
            elif t_layer == layer and t_unit != unit and layer != 1:
                problems.append(f"{rel}:{line}: {unit} imports {target}; they share a layer")
    for comp in _cycles(graph):
        problems.append(f"circle among {len(comp)} modules: " + ", ".join(comp))
    return problems


def main(argv: list[str]) -> int:
    pkg = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "ohpub"
    problems = check(pkg)
    for p in problems:
        print(p)
    if problems:
        print(f"check_layers: {len(problems)} broken rule(s) in {pkg}", file=sys.stderr)
        return 1
    print(f"check_layers: {len(modules(pkg))} modules, every arrow points down, no circle")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
