"""Argument checks shared by both implementations, and the layer pointer table the Triton kernel reads.

SGLang's KV pool keeps one ``[num_slots, num_kv_heads, head_dim]`` tensor per layer (a Python list), so a
kernel that copies the same slots of every layer in one launch cannot receive the layers as one tensor
argument. It receives a device tensor of the layers' base addresses instead (``[L] int64``, one
``data_ptr()`` each) and computes every layer's rows with the same slot stride. That is only valid when all
layers share dtype, shape and strides, which `check_layers` enforces. Building the table costs one small
host→device copy (pinned, asynchronous), so callers build it once per pool (`layer_table`) and pass it
to every call.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

__all__ = ["LayerSpec", "LayerTable", "check_args", "check_layers", "layer_table"]


class LayerSpec(NamedTuple):
    """What every layer of one pool shares (checked by `check_layers`)."""

    num_layers: int
    num_slots: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device
    stride_slot: int
    """Elements between consecutive slots of a layer (a ``[H, D]`` row itself is contiguous)."""


class LayerTable(NamedTuple):
    """A pool's layer pointer table: ``ptrs [L] int64`` on the pool's device, plus the shared `LayerSpec`.

    Valid while the layer tensors it was built from stay alive and unmoved (SGLang allocates its pool
    once). `slice_layers` views a range of layers without rebuilding (e.g. one layer per call)."""

    ptrs: torch.Tensor
    spec: LayerSpec

    def slice_layers(self, start: int, stop: int) -> "LayerTable":
        """Layers ``[start, stop)``: a view of ``ptrs`` (no copy, no host sync)."""
        if not 0 <= start < stop <= self.spec.num_layers:
            raise ValueError(f"LayerTable.slice_layers: expected 0 <= start < stop <= {self.spec.num_layers}, "
                             f"got [{start}, {stop})")
        return LayerTable(self.ptrs[start:stop], self.spec._replace(num_layers=stop - start))


def check_layers(layers: Sequence[torch.Tensor], name: str) -> LayerSpec:
    """Check ``layers`` (L >= 1 tensors ``[num_slots, H, D]``, or one ``[L, num_slots, H, D]`` tensor) share
    dtype, device, shape and strides, with contiguous ``[H, D]`` rows; return what they share."""
    layers = list(layers)
    if not layers:
        raise ValueError(f"{name}: expected at least one layer, got an empty sequence")
    first = layers[0]
    if not isinstance(first, torch.Tensor) or first.dim() != 3:
        raise ValueError(f"{name}: expected layers of shape [num_slots, num_kv_heads, head_dim], got "
                         f"{type(first).__name__} {tuple(getattr(first, 'shape', ()))}")
    _, heads, dim = first.shape
    if first.stride(2) != 1 or first.stride(1) != dim:
        raise ValueError(f"{name}: expected contiguous [num_kv_heads, head_dim] rows (strides (*, {dim}, 1)), "
                         f"got strides {first.stride()}; pass .contiguous() layers")
    want = (first.dtype, first.device, first.shape, first.stride())
    for i, t in enumerate(layers[1:], 1):
        got = (t.dtype, t.device, t.shape, t.stride())
        if got != want:
            raise ValueError(
                f"{name}: every layer must share dtype, device, shape and strides (one pointer table addresses "
                f"them all with one slot stride); layer 0 has {_describe(*want)}, layer {i} has {_describe(*got)}")
    return LayerSpec(len(layers), first.shape[0], heads, dim, first.dtype, first.device, first.stride(0))


def layer_table(layers: Sequence[torch.Tensor], *, name: str = "layers") -> LayerTable:
    """Check ``layers`` (`check_layers`) and build their pointer table ``[L] int64`` on their device.

    Example:
        >>> pool = [torch.zeros(10, 2, 4) for _ in range(3)]
        >>> t = layer_table(pool)
        >>> t.ptrs.shape, t.spec.num_slots, t.slice_layers(1, 2).ptrs.tolist() == [pool[1].data_ptr()]
        (torch.Size([3]), 10, True)
    """
    layers = list(layers)
    spec = check_layers(layers, name)
    ptrs = torch.tensor([t.data_ptr() for t in layers], dtype=torch.int64)
    if spec.device.type == "cuda":  # pinned + non_blocking: a pageable copy would block the host on the stream
        ptrs = ptrs.pin_memory().to(spec.device, non_blocking=True)
    return LayerTable(ptrs.to(spec.device), spec)


def check_slots(slots: torch.Tensor, spec: LayerSpec, name: str = "slots") -> int:
    """Check ``slots`` is ``[n]`` int32/int64 on the pool's device; return ``n``. Values are not checked
    (that would need a host sync)."""
    if slots.dim() != 1 or slots.dtype not in (torch.int32, torch.int64) or slots.device != spec.device:
        raise ValueError(f"{name}: expected [n] int32 or int64 on {spec.device}, got "
                         f"{tuple(slots.shape)} {slots.dtype} on {slots.device}")
    return slots.numel()


def check_stage(stage: torch.Tensor, spec: LayerSpec, n: int, name: str) -> None:
    """Check a staging tensor is ``[L, n, H, D]`` of the pool's dtype and device, with contiguous
    ``[H, D]`` rows (its L and n strides are free, e.g. a slice of a larger buffer or token-major)."""
    want = (spec.num_layers, n, spec.num_kv_heads, spec.head_dim)
    if (tuple(stage.shape) != want or stage.dtype != spec.dtype or stage.device != spec.device
            or (n > 0 and (stage.stride(3) != 1 or stage.stride(2) != spec.head_dim))):
        raise ValueError(f"{name}: expected {list(want)} {spec.dtype} on {spec.device} with contiguous "
                         f"[H, D] rows, got {_describe(stage.dtype, stage.device, stage.shape, stage.stride())}")


def check_args(layers_k, layers_v, slots: torch.Tensor, stage_k: torch.Tensor, stage_v: torch.Tensor, stage: str,
               k_table: LayerTable | None = None, v_table: LayerTable | None = None) -> tuple[LayerSpec, LayerSpec, int]:
    """Check one call's arguments (``stage``: the staging tensors' name prefix, 'out' or 'src'); return
    ``(spec_k, spec_v, n)``. Given tables, their specs stand in for the layers (no per-layer walk)."""
    spec_k = k_table.spec if k_table is not None else check_layers(layers_k, "layers_k")
    spec_v = v_table.spec if v_table is not None else check_layers(layers_v, "layers_v")
    if (spec_k.num_layers, spec_k.num_slots, spec_k.num_kv_heads, spec_k.device) != (
            spec_v.num_layers, spec_v.num_slots, spec_v.num_kv_heads, spec_v.device):
        raise ValueError(f"layers_k/layers_v: expected the same layer count, num_slots, num_kv_heads and device, "
                         f"got {spec_k} and {spec_v}")
    n = check_slots(slots, spec_k)
    check_stage(stage_k, spec_k, n, f"{stage}_k")
    check_stage(stage_v, spec_v, n, f"{stage}_v")
    return spec_k, spec_v, n


def _describe(dtype, device, shape, stride) -> str:
    return f"{str(dtype).replace('torch.', '')} {list(shape)} strides {tuple(stride)} on {device}"
