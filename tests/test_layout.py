"""The tree reads as the data path: import direction, no cycles, size limits, documented packages.

Imports are read with `ast` (nothing is executed), so a violation is found even in code no test runs.
Rules:
1. In ``mosaic_sglang/`` only ``integration/`` imports ``sglang``; ``kernels/`` never does; ``frontend/``
   may use SGLang's frontend language (``sglang``, ``sglang.lang``) but not the runtime (``sglang.srt``).
2. Nothing outside ``integration/`` imports ``mosaic_sglang.integration``.
3. No import cycle between the project's modules (function-level and ``TYPE_CHECKING`` imports count).
4. Kernels are imported by their installed name ``mosaic_sglang.kernels``, never by a relative import
   from ``mosaic_sglang/`` (there is no ``mosaic_sglang/kernels`` folder in the tree).
5. No module over 600 lines, no function over 80; every package ``__init__`` has a docstring and ``__all__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"mosaic_sglang": "mosaic_sglang", "kernels": "mosaic_sglang.kernels", "frontend": "mosaic_sglang.frontend"}
SKIP = ("cpu_compat",)  # shims installed into site-packages for CPU SGLang, not project modules


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder)
            if any(part in SKIP for part in rel.parts):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """``(absolute target, line)`` of every import statement in the module (relative ones resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module
            out.append((target, node.lineno))
            out += [(f"{target}.{alias.name}", node.lineno) for alias in node.names if f"{target}.{alias.name}" in MODULES]
    return out


def _where(name: str) -> str:
    return str(MODULES[name].relative_to(ROOT))


def test_only_integration_imports_sglang():
    """SGLang's runtime is touched only in integration/; the frontend may use SGLang's frontend language,
    and kernels/ may call SGLang's Triton kernels (`sglang.kernels.ops`) instead of writing others."""
    bad = []
    for name, path in MODULES.items():
        for target, line in _imports(name, path):
            if not (target == "sglang" or target.startswith("sglang.")):
                continue
            if name.startswith("mosaic_sglang.integration"):
                continue
            if name.startswith("mosaic_sglang.frontend") and not target.startswith("sglang.srt"):
                continue  # the frontend language is the frontend's own API
            if name.startswith("mosaic_sglang.kernels") and target.startswith("sglang.kernels.ops."):
                continue  # SGLang's own Triton kernels, called where one does the job (imported when called)
            bad.append(f"{_where(name)}:{line} imports {target}")
    assert not bad, "only mosaic_sglang/integration/ may import SGLang:\n" + "\n".join(bad)


def test_nothing_outside_integration_imports_it():
    bad = [
        f"{_where(name)}:{line} imports {target}"
        for name, path in MODULES.items()
        if not name.startswith("mosaic_sglang.integration")
        for target, line in _imports(name, path)
        if target == "mosaic_sglang.integration" or target.startswith("mosaic_sglang.integration.")
    ]
    assert not bad, "integration/ is the outermost layer; nothing else may import it:\n" + "\n".join(bad)


def test_kernels_are_imported_by_their_installed_name():
    bad = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level and name.startswith("mosaic_sglang.") \
                    and not name.startswith(("mosaic_sglang.kernels", "mosaic_sglang.frontend")):
                if (node.module or "").split(".")[0] in ("kernels", "frontend"):
                    bad.append(f"{_where(name)}:{node.lineno} imports {'.' * node.level}{node.module}")
    assert not bad, "use `mosaic_sglang.kernels` / `mosaic_sglang.frontend`, not a relative import:\n" + "\n".join(bad)


def _graph() -> dict[str, dict[str, int]]:
    """Module → {imported project module: line}. Importing ``a.b.c`` also runs ``a.b``'s ``__init__``:
    the target's packages count too, except the importer's own ancestors (already being imported)."""
    graph = {}
    for name, path in MODULES.items():
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        edges = {}
        for target, line in _imports(name, path):
            parts = target.split(".")
            for i in range(2, len(parts) + 1):
                node = ".".join(parts[:i])
                if node in MODULES and node != name and node not in ancestors:
                    edges.setdefault(node, line)
        graph[name] = edges
    return graph


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str):
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                steps = [f"{_where(a)}:{graph[a][b]} imports {b}" for a, b in zip(cycle, cycle[1:])]
                pytest.fail("import cycle:\n" + "\n".join(steps))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checker_sees_a_cycle_and_a_forbidden_import(tmp_path, monkeypatch):
    # The rules above must be able to fail: a planted cycle and a planted sglang import are reported.
    (tmp_path / "mosaic_sglang" / "core").mkdir(parents=True)
    (tmp_path / "mosaic_sglang" / "__init__.py").write_text('"""x"""\n')
    (tmp_path / "mosaic_sglang" / "core" / "__init__.py").write_text('"""x"""\n__all__ = []\n')
    (tmp_path / "mosaic_sglang" / "core" / "a.py").write_text("from .b import f\nimport sglang.srt.utils\n")
    (tmp_path / "mosaic_sglang" / "core" / "b.py").write_text("def f():\n    from .a import g\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__), "FOLDERS", {"mosaic_sglang": "mosaic_sglang"})
    monkeypatch.setattr(__import__(__name__), "MODULES", _modules())
    with pytest.raises(pytest.fail.Exception, match=r"core/a.py:1 imports mosaic_sglang.core.b"):
        test_no_import_cycles()
    with pytest.raises(AssertionError, match=r"core/a.py:2 imports sglang.srt.utils"):
        test_only_integration_imports_sglang()


def test_module_and_function_sizes():
    too_long = [f"{_where(n)}: {len(p.read_text().splitlines())} lines" for n, p in MODULES.items()
                if len(p.read_text().splitlines()) > 600]
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    too_long.append(f"{_where(name)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "over the size limits (module 600 lines, function 80):\n" + "\n".join(too_long)


def test_every_package_states_its_job_and_exports():
    missing = []
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        doc = ast.get_docstring(tree)
        exports = any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets)
                      for n in tree.body)
        if not doc or len(doc.split()) < 12 or not exports:
            missing.append(f"{_where(name)}: docstring {'ok' if doc and len(doc.split()) >= 12 else 'missing'}, "
                           f"__all__ {'ok' if exports else 'missing'}")
    assert not missing, "each package __init__ states its job in a paragraph and lists __all__:\n" + "\n".join(missing)
