"""Soak: concurrent streaming video sessions against a Mosaic server for a fixed time; flat or not?

Starts ``sglang.launch_server --enable-mosaic --enable-streaming-session`` on 127.0.0.1 (the embedded
tiny Qwen2.5-VL by default, the host tier on, `MosaicConfig`'s defaults otherwise, ``MOSAIC_DEBUG`` off
unless set) and runs ``--sessions``
client threads. Each opens a streaming session, appends short synthetic clips as chunks turn by turn,
asks a streamed question every ``--question-every`` chunks, and starts a new session after
``--chunks-per-session`` chunks (so the live working set is bounded and any growth is a leak).

Printed per minute: requests, chunk-ingest p50, decode step p50 / p99 (the gap between streamed tokens,
as a client sees it), the RSS of the server's whole process tree and of its scheduler, and Mosaic's
gauges (indexed videos, clusters, host-store tokens, live requests: a leak of indexes, host pages or
per-request state shows there). The run stops by itself after
``--minutes`` or ``--max-requests``; it exits 1 if the last minute's p50 or p99 step latency or RSS is
more than ``--drift`` (20 %) above minute 2's (minute 1 holds the warm-up), or if any request failed.

    .venv/bin/python benchmarks/soak.py --minutes 10          # the table in benchmarks/README.md
    .venv/bin/python benchmarks/soak.py --minutes 1 --sessions 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mosaic_sglang.frontend.server import SGLangServer, cpu_server_args  # noqa: E402
from mosaic_sglang.frontend.video import make_synthetic_video  # noqa: E402

CHUNK = "<|vision_start|><|video_pad|><|vision_end|>"
QUESTION = "<|im_end|>\n<|im_start|>user\nwhat changed?<|im_end|>\n<|im_start|>assistant\n"
NEXT_USER = "<|im_end|>\n<|im_start|>user\n"


class Log:
    """Thread-safe event log: (time, kind, value)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, str, float]] = []
        self.failures: list[str] = []

    def add(self, kind: str, value: float) -> None:
        with self.lock:
            self.events.append((time.monotonic(), kind, value))

    def fail(self, message: str) -> None:
        with self.lock:
            self.failures.append(message)


def _post(url: str, body: dict, **kwargs):
    return requests.post(url, json=body, timeout=600, **kwargs)


def _ask_streamed(url: str, body: dict, log: Log) -> str:
    """Stream one question; log the gaps between streamed tokens; return the final meta rid."""
    body = {**body, "stream": True}
    last, rid = None, None
    with _post(url + "/generate", body, stream=True) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            now = time.monotonic()
            if last is not None:
                log.add("step", now - last)
            last = now
            rid = json.loads(line[6:])["meta_info"]["id"]
    return rid


def session_worker(url: str, clips: list[str], args, log: Log, stop: threading.Event, seed: int) -> None:
    rng = np.random.default_rng(seed)
    while not stop.is_set():
        sid = _post(url + "/open_session", {"capacity_of_str_len": 1_000_000, "streaming": True}).json()
        rid = None
        try:
            for i in range(args.chunks_per_session):
                if stop.is_set():
                    break
                text = ("<|im_start|>user\n" if i == 0 else (NEXT_USER if i % args.question_every == 0 else "")) + CHUNK
                body = {"text": text, "video_data": [clips[int(rng.integers(len(clips)))]],
                        "sampling_params": {"max_new_tokens": 1, "temperature": 0},
                        "session_params": {"id": sid, "rid": rid}}
                t0 = time.monotonic()
                response = _post(url + "/generate", body)
                if response.status_code != 200:
                    log.fail(f"chunk: {response.status_code} {response.text[:200]}")
                    break
                log.add("chunk", time.monotonic() - t0)
                log.add("request", 1)
                rid = response.json()["meta_info"]["id"]
                if (i + 1) % args.question_every == 0:
                    q = {"text": QUESTION, "sampling_params": {"max_new_tokens": args.answer_tokens, "temperature": 0},
                         "session_params": {"id": sid, "rid": rid}}
                    rid = _ask_streamed(url, q, log)
                    log.add("request", 1)
        except requests.RequestException as e:
            log.fail(f"request: {e}")
        finally:
            _post(url + "/close_session", {"session_id": sid})


def tree_rss_mb(pid: int) -> tuple[float, float]:
    """RSS of the server's whole process tree and of its largest process (the scheduler), in MiB."""
    proc = psutil.Process(pid)
    sizes = []
    for p in [proc, *proc.children(recursive=True)]:
        try:
            sizes.append(p.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    return sum(sizes) / 2**20, max(sizes, default=0) / 2**20


GAUGES = ("mosaic:indexed_videos", "mosaic:clusters", "mosaic:host_store_used_tokens", "mosaic:live_requests")


def mosaic_gauges(url: str) -> dict:
    out = {}
    for line in requests.get(url + "/metrics", timeout=30).text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in GAUGES:
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


def minute_table(log: Log, rss: list[tuple[float, float]], start: float, minutes: int) -> list[dict]:
    rows = []
    for m in range(minutes):
        lo, hi = start + 60 * m, start + 60 * (m + 1)
        pick = lambda kind: np.array([v for t, k, v in log.events if k == kind and lo <= t < hi])
        steps, chunks = pick("step"), pick("chunk")
        mem = [mb for t, mb, _, _ in rss if lo <= t < hi]
        top = [mb for t, _, mb, _ in rss if lo <= t < hi]
        gauges = [g for t, _, _, g in rss if lo <= t < hi]
        rows.append({
            "scheduler_rss_mb": float(np.median(top)) if top else float("nan"),
            **{k.split(":")[1]: gauges[-1].get(k, float("nan")) if gauges else float("nan") for k in GAUGES},
            "minute": m + 1, "requests": int(pick("request").sum()),
            "chunk_p50_ms": float(np.percentile(chunks, 50) * 1e3) if chunks.size else float("nan"),
            "step_p50_ms": float(np.percentile(steps, 50) * 1e3) if steps.size else float("nan"),
            "step_p99_ms": float(np.percentile(steps, 99) * 1e3) if steps.size else float("nan"),
            "rss_mb": float(np.median(mem)) if mem else float("nan"),
        })
    return rows


JUDGED = ("step_p50_ms", "step_p99_ms", "rss_mb")


def judge(rows: list[dict], limit: float) -> tuple[int, dict, list[str]]:
    """``(reference minute, drift per judged column, columns over limit)``: the last minute against
    minute 2 (minute 1 holds the warm-up; with fewer than 3 minutes, minute 1). NaN counts as over."""
    first = rows[1] if len(rows) > 2 else rows[0]
    drift = {k: rows[-1][k] / first[k] - 1 for k in JUDGED}
    return first["minute"], drift, [k for k in JUDGED if not drift[k] <= limit]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-path", default=None, help="default: the embedded tiny Qwen2.5-VL")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument("--sessions", type=int, default=3)
    p.add_argument("--chunks-per-session", type=int, default=6)
    p.add_argument("--question-every", type=int, default=2)
    p.add_argument("--answer-tokens", type=int, default=16)
    p.add_argument("--budget", type=int, default=64)
    p.add_argument("--backend", choices=["mosaic", "dense"], default="mosaic",
                   help="dense: SGLang's torch_native backend under the same load (A/B for a drift)")
    p.add_argument("--drift", type=float, default=0.20)
    p.add_argument("--out", default=None, help="write the table as JSON here")
    return p.parse_args(argv)


def run(args, workdir: Path) -> tuple[list[dict], list[str]]:
    model = args.model_path
    if model is None:
        from mosaic_sglang.testing.tiny_models import build_tiny_model

        model = str(build_tiny_model("qwen2_5_vl"))
    clips = [str(make_synthetic_video(workdir / f"chunk{i}.mp4", num_frames=8, size=112, num_scenes=1, seed=i))
             for i in range(4)]
    options = {"host_store_tokens": 1 << 16, "recent_window": 32, "allowed_media_dirs": [str(workdir)]}
    if args.backend == "mosaic":
        server_args = ["--enable-mosaic", "--mosaic-budget", str(args.budget), "--mosaic-config", json.dumps(options)]
    else:  # the same load on SGLang's dense CPU backend: is a drift ours or SGLang's?
        server_args = ["--attention-backend", "torch_native"]
    server_args += ["--enable-streaming-session", "--enable-metrics", *cpu_server_args(max_total_tokens=32768)]
    log, stop, rss = Log(), threading.Event(), []
    with SGLangServer(model, server_args, log_path=workdir / "server.log") as server:
        workers = [threading.Thread(target=session_worker, args=(server.url, clips, args, log, stop, s), daemon=True)
                   for s in range(args.sessions)]
        start = time.monotonic()
        for w in workers:
            w.start()
        deadline = start + 60 * args.minutes
        while time.monotonic() < deadline and not log.failures and server.alive():
            rss.append((time.monotonic(), *tree_rss_mb(server.process.pid), mosaic_gauges(server.url)))
            if sum(1 for _, k, _ in log.events if k == "request") >= args.max_requests:
                break
            time.sleep(2.0)
        stop.set()
        for w in workers:
            w.join(timeout=600)
        if not server.alive():
            log.fail("the server died")
    minutes = max(1, int((time.monotonic() - start) // 60)) if args.minutes >= 1 else 1
    return minute_table(log, rss, start, minutes), log.failures


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mosaic-soak-") as tmp:
        rows, failures = run(args, Path(tmp))
    print(f"soak ({args.backend}): {args.sessions} streaming sessions, {args.chunks_per_session} chunks each, a "
          f"question every {args.question_every} chunks" + (f", budget {args.budget}, host tier on"
                                                             if args.backend == "mosaic" else ""))
    print("| minute | requests | chunk p50 ms | step p50 ms | step p99 ms | server RSS MB | scheduler RSS MB "
          "| indexed videos | clusters | host store tokens | live requests |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['minute']} | {r['requests']} | {r['chunk_p50_ms']:.0f} | {r['step_p50_ms']:.1f} | "
              f"{r['step_p99_ms']:.1f} | {r['rss_mb']:.0f} | {r['scheduler_rss_mb']:.0f} | "
              f"{r['indexed_videos']:.0f} | {r['clusters']:.0f} | {r['host_store_used_tokens']:.0f} | "
              f"{r['live_requests']:.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "failures": failures}, indent=1))
    reference, drift, bad = judge(rows, args.drift)
    print(f"drift, last minute vs minute {reference}: " + ", ".join(f"{k} {v:+.1%}" for k, v in drift.items()))
    for failure in failures[:5]:
        print("failure:", failure)
    if failures or bad:
        print(f"FAIL: {'; '.join(bad) + ' drifted over ' + format(args.drift, '.0%') if bad else ''} "
              f"{len(failures)} failed request(s)")
        return 1
    print("flat: p50 / p99 step latency and RSS within", format(args.drift, ".0%"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
