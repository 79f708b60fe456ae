"""Import ``mosaic_sglang.kernels`` whether or not the project is installed (the GPU box has torch and
Triton but no registry, so the checkout may be used in place: ``kernels/`` is then mapped to the
package name the install would give it)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

__all__ = ["load_kernels"]

_OPS = ("assemble_always", "cluster_scoring", "emit_members", "exact_fill", "extent_copy", "sparse_decode")
_ROOT = Path(__file__).resolve().parents[1]


def load_kernels() -> types.SimpleNamespace:
    """The kernel op packages as attributes (``K.sparse_decode``, ...)."""
    try:
        importlib.import_module("mosaic_sglang.kernels")
    except ImportError:
        if str(_ROOT) not in sys.path:
            sys.path.insert(0, str(_ROOT))
        importlib.import_module("mosaic_sglang")
        spec = importlib.util.spec_from_file_location(
            "mosaic_sglang.kernels", _ROOT / "kernels" / "__init__.py", submodule_search_locations=[str(_ROOT / "kernels")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["mosaic_sglang.kernels"] = module
        spec.loader.exec_module(module)
    return types.SimpleNamespace(**{op: importlib.import_module(f"mosaic_sglang.kernels.{op}") for op in _OPS})
