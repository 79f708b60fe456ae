"""Copy ceilings of one GPU: device-to-device copy bandwidth and pinned host-to-device bandwidth, whole and
in cluster-sized extents (torch only; no SGLang, no FlashInfer).

Measured, each the median of ``--repeats`` event-timed runs after a warm-up:

* ``d2d``: ``dst.copy_(src)`` between two device buffers of ``--d2d-mib``; ``GB/s`` counts the bytes
  read plus the bytes written (the memory traffic of a copy, so it compares with the card's HBM peak);
  ``gpu_decode_step.py`` divides the bytes a decode step reads by it for its floor;
* ``h2d``: one copy of ``--h2d-mib`` from pinned host memory to the device (bytes moved / time);
* ``h2d_extents``: loading a selection of ``--selection`` tokens of Qwen2.5-VL-7B KV from a host store laid
  out by extent (one cluster's tokens, every layer's K and V contiguous: 28 layers × K+V × 4 heads × 128 ×
  bf16 = 57,344 bytes per token) for extents of 8 / 32 / 64 tokens, three ways: one ``copy_`` per extent,
  one per run of ``--run-extents`` adjacent extents, and one copy of the same bytes (the ceiling). The
  selected runs are spread over a store twice the selection's size (every other run), as a selection is.

    python benchmarks/gpu_copy_bandwidth.py                      # a CUDA machine: torch only, ~10-20 s
    python benchmarks/gpu_copy_bandwidth.py --quick              # CPU smoke run: NOT GPU numbers

Without CUDA it refuses (exit 2) unless ``--quick`` is given; then it copies small non-pinned CPU buffers
and says that the numbers are not GPU numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

MIB = 1 << 20
QWEN_KV_BYTES_PER_TOKEN = 28 * 2 * 4 * 128 * 2
"""Qwen2.5-VL-7B: 28 layers × (K + V) × 4 KV heads × head_dim 128 × 2 bytes (bf16) = 57,344 bytes per token."""


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d2d-mib", type=int, default=2048, help="size of each device buffer of the D2D copy")
    p.add_argument("--h2d-mib", type=int, default=1024, help="size of the single pinned H2D copy")
    p.add_argument("--extent-tokens", type=int, nargs="+", default=[8, 32, 64])
    p.add_argument("--selection", type=int, default=4096, help="tokens loaded per selection")
    p.add_argument("--run-extents", type=int, default=16, help="adjacent extents per run")
    p.add_argument("--bytes-per-token", type=int, default=QWEN_KV_BYTES_PER_TOKEN)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", help="write the rows as JSON to this file")
    p.add_argument("--quick", action="store_true", help="small CPU buffers (smoke run; not GPU numbers)")
    args = p.parse_args(argv)
    if args.quick:
        args.d2d_mib, args.h2d_mib, args.selection, args.bytes_per_token, args.repeats = 8, 8, 512, 4096, 3
    return args


class Timer:
    """Median milliseconds of a callable: CUDA events on a GPU, ``perf_counter`` on the CPU."""

    def __init__(self, device: torch.device, repeats: int):
        self.device, self.repeats = device, repeats

    def median_ms(self, fn) -> float:
        fn()  # warm-up (first-touch of pinned pages, the caching allocator)
        times = []
        for _ in range(self.repeats):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                start_s = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start_s) * 1e3)
        return statistics.median(times)


def d2d_copy_ms(device: torch.device, nbytes: int, repeats: int = 10) -> float:
    """Median milliseconds of ``dst.copy_(src)`` between two ``[nbytes] uint8`` buffers on ``device``."""
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = Timer(device, repeats).median_ms(lambda: dst.copy_(src))
    del src, dst
    return ms


def d2d_copy_gbps(device: torch.device, nbytes: int, repeats: int = 10) -> float:
    """Device copy bandwidth in GB/s: (bytes read + bytes written) / time of a ``nbytes`` copy (on the CPU:
    a memcpy, not a GPU number)."""
    return 2 * nbytes / d2d_copy_ms(device, nbytes, repeats) / 1e6


def _host_buffer(nbytes: int, device: torch.device) -> torch.Tensor:
    """``[nbytes] uint8`` on the host, pinned when the copies go to a GPU, every page written (a copy's speed
    does not depend on the bytes, so a fill, not random data: faster to make)."""
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=device.type == "cuda").fill_(7)


def _row(kind, mode, copies, nbytes, ms, extent_tokens=None) -> dict:
    return dict(kind=kind, mode=mode, extent_tokens=extent_tokens, copies=copies, bytes=nbytes, ms=ms,
                gbps=nbytes / ms / 1e6)


def h2d_extent_rows(args, device: torch.device, timer: Timer) -> list[dict]:
    """Per extent size: one ``copy_`` per extent, per run of adjacent extents, and one copy, of a
    ``--selection``-token load out of a store twice its size (the selected runs are every other run)."""
    rows = []
    run = args.run_extents
    for tokens in args.extent_tokens:
        extent = tokens * args.bytes_per_token  # bytes of one extent: every layer's K and V of its tokens
        num_runs = max(1, args.selection // (tokens * run))
        selected = num_runs * run  # extents loaded
        store = _host_buffer(2 * selected * extent, device)  # [2 × selected extents], runs alternate
        staging = torch.empty(selected * extent, dtype=torch.uint8, device=device)
        run_bytes = run * extent

        def per_extent():
            for r in range(num_runs):
                for e in range(run):
                    src = 2 * r * run_bytes + e * extent
                    dst = r * run_bytes + e * extent
                    staging[dst : dst + extent].copy_(store[src : src + extent], non_blocking=True)

        def per_run():
            for r in range(num_runs):
                staging[r * run_bytes : (r + 1) * run_bytes].copy_(
                    store[2 * r * run_bytes : (2 * r + 1) * run_bytes], non_blocking=True)

        def one_copy():
            staging.copy_(store[: selected * extent], non_blocking=True)

        nbytes = selected * extent
        for mode, fn, copies in (("per_extent", per_extent, selected), ("per_run", per_run, num_runs),
                                 ("one_copy", one_copy, 1)):
            rows.append(_row("h2d_extents", mode, copies, nbytes, timer.median_ms(fn), extent_tokens=tokens))
        del store, staging
    return rows


def _print(rows: list[dict], gpu: bool) -> None:
    note = "" if gpu else "   (CPU smoke run: NOT GPU numbers)"
    print(f"{'kind':>12} {'extent':>6} {'mode':>10} {'copies':>6} {'MB':>9} {'ms':>9} {'GB/s':>8}{note}")
    for r in rows:
        extent = "-" if r["extent_tokens"] is None else str(r["extent_tokens"])
        print(f"{r['kind']:>12} {extent:>6} {r['mode']:>10} {r['copies']:>6} {r['bytes'] / 1e6:>9.1f} "
              f"{r['ms']:>9.3f} {r['gbps']:>8.1f}")


def main(argv=None) -> list[dict]:
    """Measure, print the table, write ``--out``; returns the rows (``kind``, ``mode``, ``extent_tokens``,
    ``copies``, ``bytes``, ``ms``, ``gbps``)."""
    args = _args(argv)
    gpu = torch.cuda.is_available()
    if not gpu and not args.quick:
        print("gpu_copy_bandwidth: no CUDA device (torch.cuda.is_available() is False): nothing measured; "
              "pass --quick for a CPU smoke run (its numbers are not GPU numbers)", file=sys.stderr)
        raise SystemExit(2)
    device = torch.device("cuda" if gpu else "cpu")
    name = torch.cuda.get_device_name() if gpu else "CPU (smoke run: NOT GPU numbers; host memory not pinned)"
    print(f"device: {name}; torch {torch.__version__}; {args.bytes_per_token} KV bytes per token, "
          f"selection {args.selection} tokens, runs of {args.run_extents} extents")
    timer = Timer(device, args.repeats)
    d2d_bytes = args.d2d_mib * MIB
    rows = [_row("d2d", "copy", 1, 2 * d2d_bytes, d2d_copy_ms(device, d2d_bytes, args.repeats))]  # read + written
    host = _host_buffer(args.h2d_mib * MIB, device)
    dev = torch.empty_like(host, device=device)
    rows.append(_row("h2d", "one_copy", 1, host.numel(), timer.median_ms(lambda: dev.copy_(host, non_blocking=True))))
    del host, dev
    rows += h2d_extent_rows(args, device, timer)
    for r in rows:
        r["gpu_numbers"] = gpu
    _print(rows, gpu)
    if args.out:
        Path(args.out).write_text(json.dumps({"device": name, "gpu_numbers": gpu, "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
