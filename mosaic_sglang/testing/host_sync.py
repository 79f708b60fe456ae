"""`no_host_sync`: make host synchronisation points raise, to prove a code path is free of them.

On a GPU, ``.item()``, ``.tolist()``, ``.cpu()``, ``bool(t)``/``int(t)``/``float(t)`` and
data-dependent shapes (``nonzero``, ``unique``, boolean-mask indexing) wait for the device and cannot
be captured in a CUDA graph. On the CPU they cost nothing, so a CPU test can only see them by
intercepting the calls: a `torch.overrides.TorchFunctionMode` sees every torch function and tensor
method called from Python while it is active (nothing is patched, so nothing can be left behind).
Used by the tests and by the attention backend under ``MOSAIC_CHECK_NO_SYNC=1`` (decode layers that
keep their question's selection).
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["no_host_sync", "suspend_host_sync_check", "HostSyncError"]


class HostSyncError(RuntimeError):
    """A host-synchronising tensor operation ran inside `no_host_sync`."""


_FORBIDDEN = {
    torch.Tensor.item: "Tensor.item",
    torch.Tensor.tolist: "Tensor.tolist",
    torch.Tensor.cpu: "Tensor.cpu",
    torch.Tensor.numpy: "Tensor.numpy",
    torch.Tensor.nonzero: "Tensor.nonzero",
    torch.Tensor.unique: "Tensor.unique",
    torch.Tensor.__bool__: "bool(tensor)",
    torch.Tensor.__int__: "int(tensor)",
    torch.Tensor.__float__: "float(tensor)",
    torch.Tensor.__index__: "tensor as an index",
    torch.nonzero: "torch.nonzero",
    torch.unique: "torch.unique",
    torch.unique_consecutive: "torch.unique_consecutive",
    torch.masked_select: "torch.masked_select",
    torch.argwhere: "torch.argwhere",
}


_SUSPENDED = [0]


class _NoHostSync(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _SUSPENDED[0]:
            return func(*args, **kwargs)
        what = _FORBIDDEN.get(func)
        if what is None and func is torch.Tensor.__getitem__ and len(args) > 1:
            parts = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
                what = "boolean-mask indexing (data-dependent shape)"
        if what is not None:
            raise HostSyncError(f"host sync inside no_host_sync: {what}")
        return func(*args, **kwargs)


@contextlib.contextmanager
def no_host_sync():
    """Inside the block, the operations listed above raise `HostSyncError` naming the operation.

    Example:
        >>> with no_host_sync():
        ...     torch.ones(2).sum().item()
        Traceback (most recent call last):
        ...
        mosaic_sglang.testing.host_sync.HostSyncError: host sync inside no_host_sync: Tensor.item
    """
    with _NoHostSync():
        yield


@contextlib.contextmanager
def suspend_host_sync_check():
    """Inside the block `no_host_sync` checks nothing: for test stand-ins of device kernels (a fake FlashInfer
    launch computes with host-synchronising torch references; the real kernel does not synchronise)."""
    _SUSPENDED[0] += 1
    try:
        yield
    finally:
        _SUSPENDED[0] -= 1
