"""The package's import structure: its modules, the imports between them (those inside functions too), import
circles, the largest module, and which package imports which.

    .venv/bin/python benchmarks/import_graph.py                # this checkout
    .venv/bin/python benchmarks/import_graph.py --root DIR     # another (e.g. `git worktree add DIR REV`)

Read from the source text (``ast``), nothing is imported; ``importlib`` calls with a computed name are not seen.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def module_files(root: Path, package: str = "dmesr") -> dict[str, Path]:
    """Dotted module name -> its file, for every module of ``package`` under ``root``."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every absolute import in a file (``import a.b``: ``("a.b", [])``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def missing_modules(modules: dict[str, Path], package: str = "dmesr") -> list[str]:
    """``file: module`` for each import of a module of ``package`` that does not exist (a module renamed or
    removed while something still imports it)."""
    return [f"{path}: {module}" for path in modules.values() for module, _ in imported_names(path)
            if module.split(".")[0] == package and module not in modules]


def import_edges(modules: dict[str, Path], package: str = "dmesr") -> set[tuple[str, str]]:
    """``(importer, imported)`` module pairs; a package's ``__init__`` handing on its own modules is left out."""
    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    edges = set()
    for name, path in modules.items():
        for module, names in imported_names(path):
            for target in [f"{module}.{alias}" for alias in names] or [module]:
                imported = owner(target) if target.split(".")[0] == package else ""
                if imported and imported not in (name, package) and not (
                        path.name == "__init__.py" and imported.startswith(f"{name}.")):
                    edges.add((name, imported))
    return edges


def circles(modules: dict[str, Path], edges: set[tuple[str, str]]) -> list[list[str]]:
    """The import circles: groups of two or more modules that reach each other (strongly connected components)."""
    after = {name: sorted(b for a, b in edges if a == name) for name in modules}
    order, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative: no recursion limit to meet
        work = [(start, iter(after[start]))]
        order[start] = low[start] = len(order)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            following = next(successors, None)
            if following is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == order[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
            elif following not in order:
                order[following] = low[following] = len(order)
                stack.append(following)
                on_stack.add(following)
                work.append((following, iter(after[following])))
            elif following in on_stack:
                low[node] = min(low[node], order[following])

    for name in modules:
        if name not in order:
            visit(name)
    return sorted(found)


def package_of(module: str) -> str:
    """``dmesr.experiments.grid`` -> ``dmesr.experiments``; a top-level module is its own package."""
    return ".".join(module.split(".")[:2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="the checkout to read (default: this one)")
    root = Path(parser.parse_args().root)
    modules = module_files(root)
    edges = import_edges(modules)
    lines = {name: len(path.read_text().splitlines()) for name, path in modules.items()}
    largest = max(lines, key=lines.get)
    found = circles(modules, edges)
    print(f"{len(modules)} modules, {len(edges)} imports between them, {len(found)} import circle(s), "
          f"largest module {largest} ({lines[largest]} lines)")
    for group in found:
        print("circle: " + " <-> ".join(group))
    for line in missing_modules(modules):
        print(f"imports a module that does not exist: {line}")
    packages = sorted({package_of(name) for name in modules})
    for package in packages:
        size = sum(count for name, count in lines.items() if package_of(name) == package)
        imported = sorted({package_of(b) for a, b in edges if package_of(a) == package} - {package})
        print(f"{package} ({size} lines) imports: {', '.join(imported) or '-'}")


if __name__ == "__main__":
    main()
