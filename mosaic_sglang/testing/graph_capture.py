"""`EmulatedGraph`: CUDA-graph capture and replay semantics, checked on the CPU (tests).

A CUDA graph records kernels with the addresses and shapes of everything they read at capture; a replay
re-runs those kernels, not the Python that launched them. Code meant to run inside a graph is therefore
correct only if (1) it never synchronises with the host, and (2) every tensor it reads that was made
*outside* the captured region lives at the same address, with the same shape, at every replay — the code
outside the graph must write new inputs *into* those tensors, never rebind them — while Python values
baked in at capture (lengths, slices) must not need to change.

On the CPU there is no graph, so the emulation re-runs the captured Python at each `replay` and checks
both conditions instead: it runs under `no_host_sync`, and a `TorchDispatchMode` records, for every ATen op,
its non-tensor arguments (sizes, slice bounds, scalars: baked in at capture) and each tensor argument as either *internal* (its storage was made by an earlier op of the region: in a real
graph it lives in the graph's private pool, so its address is fixed by construction) or *external* (its
storage address, shape, strides and offset). A replay must issue the same ops with the same non-tensor arguments, internal
arguments of the same provenance and external arguments at the same places; any difference raises `GraphReplayError`
naming the op. Opaque kernels (a stand-in for a FlashInfer launch) declare what they read with
`graph_kernel`, which records one pseudo-op and suspends both checks while the stand-in computes.
"""

from __future__ import annotations

import contextlib
from typing import Callable, List, Optional, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .host_sync import no_host_sync, suspend_host_sync_check

__all__ = ["EmulatedGraph", "GraphReplayError", "graph_kernel"]

_ACTIVE: List["_Tracer"] = []


class GraphReplayError(AssertionError):
    """A replay would read different memory than the capture recorded (or synchronised with the host)."""


def _tensors(values) -> list:
    return [x for x in tree_flatten(values)[0] if isinstance(x, torch.Tensor)]


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class _Tracer(TorchDispatchMode):
    """Records (``expected is None``) or checks the ops of one run of the region."""

    def __init__(self, expected: Optional[list]) -> None:
        super().__init__()
        self.ops: list = []
        self.expected = expected
        self._internal: dict[int, int] = {}  # storage address -> provenance id within this run
        self._made = 0  # outputs seen so far (a storage made again at a freed address is a new provenance)

    def _describe(self, t: torch.Tensor) -> tuple:
        key = _storage(t)
        meta = (tuple(t.shape), tuple(t.stride()), t.storage_offset(), t.dtype)
        if key in self._internal:
            return ("internal", self._internal[key]) + meta
        return ("external", key) + meta

    def note(self, name: str, inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], scalars=()) -> None:
        entry = (name, tuple(self._describe(t) for t in inputs), tuple(scalars))
        for t in outputs:
            self._internal[_storage(t)] = self._made
            self._made += 1
        index = len(self.ops)
        self.ops.append(entry)
        if self.expected is None:
            return
        if index >= len(self.expected):
            raise GraphReplayError(f"replay issued op #{index} {name} that the capture did not record")
        if self.expected[index] != entry:
            raise GraphReplayError(f"replay op #{index} {name} reads other memory than at capture:\n"
                                   f"  capture: {self.expected[index]}\n  replay:  {entry}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        leaves = tree_flatten((args, kwargs))[0]
        scalars = [x for x in leaves if not isinstance(x, torch.Tensor)]  # baked into a real graph at capture
        self.note(str(func), [x for x in leaves if isinstance(x, torch.Tensor)], _tensors(out), scalars)
        return out


@contextlib.contextmanager
def graph_kernel(name: str, reads: Sequence[torch.Tensor], scalars: Sequence = ()):
    """Inside an `EmulatedGraph` region: one opaque kernel ``name`` that reads ``reads``; the block computes
    its result with neither check active and hands every tensor it returns to the yielded ``produced`` (in a
    real graph its memory comes from the graph's pool: later reads of it are internal). Elsewhere a no-op.

    Example:
        >>> with graph_kernel("attention", reads=[q, k, v, indices]) as produced:
        ...     out = produced(reference_attention(q, k, v, indices))
    """
    if not _ACTIVE:
        yield lambda t: t
        return
    tracer = _ACTIVE[-1]
    tracer.note(f"kernel:{name}", list(reads), (), scalars)

    def produced(t: torch.Tensor) -> torch.Tensor:
        tracer.note(f"kernel-output:{name}", (), (t,))
        return t

    with torch.utils._python_dispatch._disable_current_modes(), suspend_host_sync_check():
        yield produced


class EmulatedGraph:
    """Capture ``fn`` once, then `replay` it any number of times under the checks (module docstring)."""

    def __init__(self) -> None:
        self._fn: Optional[Callable[[], object]] = None
        self._ops: list = []

    def capture(self, fn: Callable[[], object]):
        """Run ``fn`` as the captured region (no host sync allowed); returns its result."""
        self._fn = fn
        return self._run(None)

    def replay(self):
        """Re-run the captured region; raises `GraphReplayError` where a real replay would read other memory."""
        assert self._fn is not None, "replay before capture"
        return self._run(self._ops)

    def _run(self, expected: Optional[list]):
        tracer = _Tracer(expected)
        _ACTIVE.append(tracer)
        try:
            with no_host_sync(), tracer:
                result = self._fn()
        finally:
            _ACTIVE.pop()
        if expected is None:
            self._ops = tracer.ops
        elif len(tracer.ops) != len(expected):
            raise GraphReplayError(f"replay issued {len(tracer.ops)} ops, the capture {len(expected)}")
        return result

    @property
    def num_ops(self) -> int:
        return len(self._ops)
