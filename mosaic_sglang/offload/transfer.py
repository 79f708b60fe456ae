"""`TransferEngine`: executes `TransferPlan`s from the `HostKVStore` into a device cluster cache.

Two paths behind one interface (`begin_step`, `submit`, `wait`):

- **CPU** (both tiers are CPU tensors): every run (adjacent clusters' extents, merged) is an indexed
  copy of one contiguous host range into its device slots, run synchronously; ops, runs and bytes are
  counted exactly as on a GPU.
- **CUDA** (device cache on a CUDA device, host store pinned): a side `torch.cuda.Stream`. Per run, one
  ``non_blocking`` DMA of the contiguous host range into a device staging buffer; then one
  ``index_copy_`` per layer scatters the staged rows into their slots; an event is recorded per layer.
  `wait(layer)` makes the *current* stream wait on that event (no host sync), so layer l+1's copies
  overlap layer l's attention. `begin_step` makes the side stream wait for everything the current
  stream has queued so far (last step's attention may still read slots this step overwrites).
  Untested here (no GPU on the development box); guarded by ``torch.cuda.is_available()`` so
  ``import mosaic_sglang`` never needs CUDA.

Host extents must stay allocated until their copies finished (`synchronize` on CUDA): the owner frees
host extents only after the step, and `HostKVStore.free` never runs inside a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .host_store import HostKVStore
from .residency import TransferPlan

__all__ = ["TransferEngine", "TransferStats"]


@dataclass
class TransferStats:
    """Counters since construction (or `reset_stats`)."""

    ops: int = 0
    """Cluster copies (one per missed cluster per layer)."""
    runs: int = 0
    """Contiguous host reads issued (adjacent clusters merged; `TransferPlan.num_runs`)."""
    bytes: int = 0
    """K+V bytes moved host→device."""
    launches: int = 0
    """Device-side scatter launches (CUDA: one per non-empty plan; CPU: one per run)."""
    plans: int = 0


class TransferEngine:
    """Host→device copier for one device cluster cache.

    Args:
        host: the `HostKVStore` (source rows).
        device_k: the cache's keys per layer: a ``[L, capacity, H, D]`` tensor, or a sequence of ``L``
            per-layer ``[rows, H, D]`` buffers (e.g. SGLang's KV pool layers) addressed through
            ``slot_map``. Same dtype as the store, CPU or CUDA.
        device_v: the same for values (``Dv``).
        slot_map: ``[capacity] int64`` buffer row of each cache slot (slot ``s`` of every layer lives in
            row ``slot_map[s]`` of that layer's buffers); None: slot ``s`` is row ``s``.

    Example:
        >>> from mosaic_sglang.offload.host_store import HostKVStore
        >>> from mosaic_sglang.offload.residency import ClusterResidency
        >>> host = HostKVStore(8, num_layers=1, num_kv_heads=1, head_dim=2, dtype=torch.float32)
        >>> e = host.put(torch.arange(6.).view(1, 3, 1, 2), torch.zeros(1, 3, 1, 2))
        >>> res = ClusterResidency(4, num_layers=1, bytes_per_token=host.bytes_per_token)
        >>> eng = TransferEngine(host, torch.zeros(1, 4, 1, 2), torch.zeros(1, 4, 1, 2))
        >>> res.begin_step(); a = res.access(0, [5], [e]); eng.submit(a.plan); eng.wait(0)
        >>> eng.device_k[0][a.slots, 0, 1].tolist()
        [1.0, 3.0, 5.0]
    """

    def __init__(self, host: HostKVStore, device_k, device_v, slot_map: torch.Tensor | None = None) -> None:
        device_k, device_v = list(device_k), list(device_v)
        shapes_ok = len(device_k) == len(device_v) == host.num_layers and all(
            k.dim() == 3 and v.dim() == 3 and k.shape[1:] == (host.num_kv_heads, host.head_dim)
            and v.shape[1:] == (host.num_kv_heads, host.v_head_dim) and k.shape[0] == v.shape[0]
            for k, v in zip(device_k, device_v)
        )
        if not shapes_ok:
            raise ValueError(
                f"TransferEngine: expected device_k with L={host.num_layers} layers of [rows, H={host.num_kv_heads}, "
                f"D={host.head_dim}] and device_v of [rows, H, Dv={host.v_head_dim}], got "
                f"{[tuple(k.shape) for k in device_k]}, {[tuple(v.shape) for v in device_v]}"
            )
        devices = {t.device for t in device_k + device_v}
        if any(t.dtype != host.dtype for t in device_k + device_v) or len(devices) != 1:
            raise ValueError(
                f"TransferEngine: expected device_k/device_v of dtype {host.dtype} on one device, got "
                f"{device_k[0].dtype}/{device_v[0].dtype} on {sorted(map(str, devices))}"
            )
        rows = device_k[0].shape[0]
        if slot_map is not None and (slot_map.dtype != torch.int64 or slot_map.dim() != 1
                                     or bool(((slot_map < 0) | (slot_map >= rows)).any())):
            raise ValueError(f"TransferEngine: slot_map: expected [capacity] int64 rows in [0, {rows}), got {slot_map!r}")
        self.host, self.device_k, self.device_v = host, device_k, device_v
        self.capacity = rows if slot_map is None else slot_map.numel()
        self.device = device_k[0].device
        self._slot_map = None if slot_map is None else slot_map.to(self.device)
        self.stats = TransferStats()
        self.is_cuda = self.device.type == "cuda"
        if self.is_cuda:
            if not torch.cuda.is_available():  # pragma: no cover - a CUDA tensor implies CUDA
                raise RuntimeError("TransferEngine: device tensors are on CUDA but CUDA is unavailable")
            if not host.k_buffer.is_pinned():
                raise ValueError("TransferEngine: a CUDA cluster cache needs a pinned HostKVStore (pin_memory=True)")
            self._stream = torch.cuda.Stream(device=self.device)
            self._events = [torch.cuda.Event() for _ in range(host.num_layers)]
            self._pending = [False] * host.num_layers
            # [capacity, H, D]: a plan never exceeds the cache
            self._stage_k = device_k[0].new_empty((self.capacity,) + tuple(device_k[0].shape[1:]))
            self._stage_v = device_v[0].new_empty((self.capacity,) + tuple(device_v[0].shape[1:]))

    def rows(self, slots: torch.Tensor) -> torch.Tensor:
        """Buffer rows of cache ``slots [n] int64`` (on the cache's device)."""
        slots = slots.to(self.device)
        return slots if self._slot_map is None else self._slot_map[slots]

    def reset_stats(self) -> None:
        self.stats = TransferStats()

    def begin_step(self) -> None:
        """Order this step's copies after everything already queued on the current stream (CUDA);
        no-op on CPU."""
        if self.is_cuda:
            self._stream.wait_stream(torch.cuda.current_stream(self.device))

    def submit(self, plan: TransferPlan) -> None:
        """Run (CPU) or enqueue (CUDA) one layer's copies.

        Args:
            plan: from `ClusterResidency.access` / `prefetch`; its slots index ``device_k[plan.layer]``.
        """
        self.stats.plans += 1
        if plan.num_ops == 0:
            return
        self.stats.ops += plan.num_ops
        self.stats.runs += plan.num_runs
        self.stats.bytes += plan.num_bytes
        if self.is_cuda:
            self._submit_cuda(plan)
        else:
            self._submit_cpu(plan)

    def wait(self, layer: int) -> None:
        """Make the current stream wait for every copy submitted for ``layer`` (CUDA; CPU: no-op)."""
        if self.is_cuda and self._pending[layer]:
            torch.cuda.current_stream(self.device).wait_event(self._events[layer])
            self._pending[layer] = False

    def synchronize(self) -> None:
        """Block the host until every submitted copy finished (CUDA; CPU: no-op)."""
        if self.is_cuda:
            self._stream.synchronize()

    # -- paths ------------------------------------------------------------------------------------

    def _submit_cpu(self, plan: TransferPlan) -> None:
        layer, host = plan.layer, self.host
        dk, dv = self.device_k[layer], self.device_v[layer]
        dst = self.rows(plan.dst_slots)
        runs = plan.runs()
        for start, length, first in runs:  # one contiguous host read per run of adjacent clusters
            slots = dst[first : first + length]
            dk.index_copy_(0, slots, host.k_buffer[layer, start : start + length])
            dv.index_copy_(0, slots, host.v_buffer[layer, start : start + length])
        self.stats.launches += len(runs)

    def _submit_cuda(self, plan: TransferPlan) -> None:  # pragma: no cover - needs a GPU
        layer, host = plan.layer, self.host
        with torch.cuda.stream(self._stream):
            offset = 0
            for start, length, _ in plan.runs():  # one DMA per run of adjacent clusters
                self._stage_k[offset : offset + length].copy_(host.k_buffer[layer, start : start + length], non_blocking=True)
                self._stage_v[offset : offset + length].copy_(host.v_buffer[layer, start : start + length], non_blocking=True)
                offset += length
            slots = self.rows(plan.dst_slots.to(self.device, non_blocking=True))
            self.device_k[layer].index_copy_(0, slots, self._stage_k[:offset])
            self.device_v[layer].index_copy_(0, slots, self._stage_v[:offset])
            self._events[layer].record(self._stream)
        self._pending[layer] = True
        self.stats.launches += 1
