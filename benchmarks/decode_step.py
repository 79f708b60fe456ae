"""Decode-step cost at long context through `sgl.Engine` on CPU: dense ``torch_native`` vs Mosaic (host tier
off and on), side by side in one run.

Model: the embedded ``qwen2_5_vl_longctx`` (random weights): Qwen2.5-VL-7B's attention shapes — 28 query /
4 KV heads × 128 dims (GQA 7), hidden 3584 — with 2 layers and a 512-wide MLP, so attention over the
context, not the MLP, is what grows with the context in a dense decode step.

Context: one synthetic video (PyAV, 2 fps, 448 px: 256 video tokens per 2 frames, ``context / 128``
frames) followed by a question. Mosaic prefills it in ``--chunk``-token chunks (chunked prefill, as a
stream arrives); SGLang's embedding cache is raised (``SGLANG_VLM_CACHE_SIZE_MB``) so the vision tower
runs once per video, not once per chunk. The dense engine gets a text prompt of exactly the same length,
prefilled in one chunk: SGLang's ``torch_native`` extend pads each chunk's queries to the whole sequence,
so a chunked dense prefill costs cubic time (32K+ tokens take hours on 2 cores). A dense decode step's
cost does not depend on what the tokens are; the run checks that at the smallest context
(``dense-video`` row: the video itself, chunked prefill) against the text prompt.

Mosaic engines run `MosaicConfig`'s defaults except what their mode names: ``mosaic`` is the defaults
(Mosaic as shipped), ``mosaic+host`` the defaults with the host tier on.

Measured per context and engine, with the prompt cached (a warm-up question prefills it):

- ``fwd ms``: median model forward per decode step, timed inside the scheduler around
  ``ModelRunner.forward`` (``MOSAIC_FORWARD_LOG_DIR``; SGLang's CPU scheduler overhead is not in it);
- ``plan %``: share of Mosaic's forward spent planning and selecting on the host (``plan_s + select_s``);
- ``e2e ms/tok``: end-to-end time per output token seen by the caller of a streamed request, from its first
  token to its last (scheduler, detokenizer and streaming included);
- ``ratio``: Mosaic ÷ dense at the same context, forward and end to end.

``mosaic-reselect`` (only when asked for with ``--modes``): ``reselect_every = 1``, every decode
step scores the clusters and fills the budget again at every layer (the device path without host syncs,
`select_layer_into`), instead of copying the question's selection from the ``req_to_selection`` slab.
``mosaic-per-head`` / ``mosaic-reselect-per-head`` and ``mosaic-shared`` / ``mosaic-reselect-shared`` (also
only with ``--modes``): the same with ``selection_heads='per_kv_head'`` (one list per KV head) or ``'shared'``
(one per layer), whatever the default: the planning, metadata and attention cost of per-head lists.
``mosaic-reselect-cluster-share`` (also only with ``--modes``): ``mosaic-reselect`` with ``share_of_total`` off,
so the cost of reading the always part's keys at every selecting layer shows beside ``mosaic-reselect``.

    .venv/bin/python benchmarks/decode_step.py                   # 8K / 32K / 64K (~15-20 min on 2 cores)
    .venv/bin/python benchmarks/decode_step.py --quick           # 2K / 4K, 3 steps (smoke run, ~3 min)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TOKENS_PER_FRAME_PAIR = 256  # 448 px: 16 × 16 merged patches per temporal group of 2 frames
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
QUESTION = "what happens in the video?<|im_end|>\n<|im_start|>assistant\n"
MODES = ("dense", "dense-video", "mosaic", "mosaic+host", "mosaic-reselect", "mosaic-per-head",
         "mosaic-reselect-per-head", "mosaic-shared", "mosaic-reselect-shared", "mosaic-reselect-cluster-share")
"""``mosaic-reselect-cluster-share``: re-selecting with `MosaicConfig.share_of_total` off (shares among the
clusters only), the cost of reading the always part at every selecting layer, side by side."""


def engine_kwargs(model: str, mode: str, args, max_context: int) -> dict:
    pool = max_context + 4096 + (args.budget + 256) * 2  # prompt + answer, cluster caches, slack
    kwargs = dict(model_path=model, device="cpu", sampling_backend="pytorch", grammar_backend="none",
                  skip_server_warmup=True, dtype="float32", max_total_tokens=pool, log_level="error",
                  mem_fraction_static=0.6, context_length=max_context + 1024, disable_overlap_schedule=True,
                  watchdog_timeout=3600)  # a one-chunk dense 64K prefill takes minutes on 2 cores
    if mode == "dense":
        kwargs.update(attention_backend="torch_native", chunked_prefill_size=-1, max_prefill_tokens=max_context + 1024)
    elif mode == "dense-video":
        kwargs.update(attention_backend="torch_native", chunked_prefill_size=args.chunk)
    else:
        host = max_context + 1024 if mode == "mosaic+host" else 0
        reselect = 1 if mode.startswith("mosaic-reselect") else 0  # every decode step selects again at every layer
        options = {"host_store_tokens": host, "reselect_every": reselect,
                   "share_of_total": not mode.endswith("cluster-share")}
        if mode.endswith(("-per-head", "-shared")):  # the per-head toggle, both sides explicit; else the default
            options["selection_heads"] = "per_kv_head" if mode.endswith("-per-head") else "shared"
        kwargs.update(enable_mosaic=True, mosaic_budget=args.budget, chunked_prefill_size=args.chunk,
                      mosaic_config=options)
    return kwargs


class ForwardLog:
    """The scheduler's forward records (`integration.forward_timer`), read incrementally."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.seen = directory, 0

    def new(self) -> list[dict]:
        from mosaic_sglang.integration.forward_timer import read_forward_log

        records = read_forward_log(self.directory)
        fresh, self.seen = records[self.seen:], len(records)
        return fresh


def measure(engine, log: ForwardLog, request: dict, steps: int) -> dict:
    """A warm-up question prefills the prompt into the tree; a second one streams ``1 + steps`` tokens over
    the cached prompt: its decode forwards are read from the log, and the caller's time per output token
    is the time from the first streamed token to the last over ``steps`` (prompt processing — video
    decoding on the tokenizer side — is before the first token, so it is not in it)."""
    greedy = {"max_new_tokens": 1 + steps, "temperature": 0.0, "ignore_eos": True}
    t0 = time.perf_counter()
    first = engine.generate(**request, sampling_params={**greedy, "max_new_tokens": 1})
    prefill_s = time.perf_counter() - t0
    log.new()
    stamps, last = [], None
    for chunk in engine.generate(**request, sampling_params=greedy, stream=True):
        stamps.append(time.perf_counter())
        last = chunk
    decode = [r for r in log.new() if r["mode"] == "decode"]
    assert len(decode) == steps, f"expected {steps} decode forwards, logged {len(decode)}"
    # Mosaic's decode steps extend the host copy of the row by one slot: the first step may re-read it
    assert sum(r.get("rows_read", 0) for r in decode[1:]) == 0, [r.get("rows_read") for r in decode]
    tokens = int(last["meta_info"]["completion_tokens"])
    assert tokens == 1 + steps and len(stamps) >= 2, (tokens, len(stamps))
    fwd = statistics.median(r["seconds"] for r in decode)
    host = statistics.median((r.get("plan_s", 0.0) + r.get("select_s", 0.0)) / r["seconds"] for r in decode)
    stats = (last["meta_info"].get("mosaic") or [None])[-1] or {}
    seconds = sorted(r["seconds"] for r in decode)
    fwd_mean, fwd_p90 = statistics.fmean(seconds), seconds[int(0.9 * (len(seconds) - 1))]
    return dict(context=int(first["meta_info"]["prompt_tokens"]), prefill_s=prefill_s, fwd=fwd, fwd_mean=fwd_mean,
                fwd_p90=fwd_p90, host_share=host,
                e2e=(stamps[-1] - stamps[0]) / (tokens - 1), attended=stats.get("attended_tokens"),
                host_tokens=stats.get("host_tokens"), copies=stats.get("host_copies"))


def run_mode(model: str, mode: str, contexts: list[int], lengths: dict, args, workdir: Path) -> dict:
    import sglang as sgl

    from mosaic_sglang.config import MOSAIC_FORWARD_LOG_DIR
    from mosaic_sglang.frontend.video import make_synthetic_video

    log_dir = workdir / f"log-{mode}"
    MOSAIC_FORWARD_LOG_DIR.set(str(log_dir))  # read by the plugin in the engine's scheduler process
    os.environ["SGLANG_VLM_CACHE_SIZE_MB"] = str(max(100, max(contexts) * 3584 * 4 >> 19))  # 2x the embedding
    engine = sgl.Engine(**engine_kwargs(model, mode, args, max(lengths.get(c, c) for c in contexts)))
    log, results = ForwardLog(log_dir), {}
    try:
        for context in contexts if mode != "dense-video" else contexts[:1]:
            if mode == "dense":
                n = lengths[context]  # the Mosaic prompt's length, as text
                request = dict(input_ids=[8 + (7 * i) % 600 for i in range(n)])
            else:
                frames = 2 * max(1, context // TOKENS_PER_FRAME_PAIR)
                video = make_synthetic_video(workdir / f"v{context}.mp4", num_frames=frames, fps=2, size=448,
                                             num_scenes=max(1, frames // 16), seed=context)
                request = dict(prompt="<|im_start|>user\n" + VIDEO + QUESTION, video_data=[str(video)])
            results[context] = measure(engine, log, request, args.steps)
            print(f"  {mode} {context}: {results[context]}", flush=True)
            engine.flush_cache()
    finally:
        engine.shutdown()
        MOSAIC_FORWARD_LOG_DIR.set(None)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2K / 4K contexts, 3 decode steps")
    p.add_argument("--contexts", type=int, nargs="*", default=None, help="context lengths (tokens, multiples of 2048)")
    p.add_argument("--budget", type=int, default=2048, help="Mosaic budget (selected tokens per layer)")
    p.add_argument("--chunk", type=int, default=2048, help="chunked prefill size of the video engines")
    p.add_argument("--steps", type=int, default=None, help="decode steps measured per context")
    p.add_argument("--modes", nargs="*", choices=MODES,
                   default=[m for m in MODES if not any(k in m for k in ("reselect", "per-head", "-shared"))])
    args = p.parse_args()
    contexts = args.contexts or ([2048, 4096] if args.quick else [8192, 32768, 65536])
    args.steps = args.steps or (3 if args.quick else 12)

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from mosaic_sglang.testing.tiny_models import build_tiny_model

    model = str(build_tiny_model("qwen2_5_vl_longctx"))
    workdir = Path(tempfile.mkdtemp(prefix="mosaic_decode_step_"))
    import torch

    print(f"qwen2_5_vl_longctx (random weights; 2 layers, 28/4 heads × 128), CPU {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; budget {args.budget}, chunk {args.chunk}, "
          f"{args.steps} decode steps per context", flush=True)
    results: dict = {}
    video_modes = [m for m in args.modes if m.startswith("mosaic")] or ["mosaic"]
    for mode in video_modes:
        results[mode] = run_mode(model, mode, contexts, {}, args, workdir)
    lengths = {c: r["context"] for c, r in results[video_modes[0]].items()}
    for mode in ("dense", "dense-video"):
        if mode in args.modes:
            results[mode] = run_mode(model, mode, contexts, lengths, args, workdir)
    print_table(results, contexts)


def print_table(results: dict, contexts: list[int]) -> None:
    dense = results.get("dense", {})
    print("\n| context | engine | fwd ms | plan % | e2e ms/tok | fwd ratio | e2e ratio | attended | host tokens | prefill s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for context in contexts:
        for mode, rows in results.items():
            r = rows.get(context)
            if r is None:
                continue
            d = dense.get(context)
            ratio = lambda key: f"{r[key] / d[key]:.3f}" if d and mode != "dense" else "—"  # noqa: E731
            plan = f"{100 * r['host_share']:.1f}" if mode.startswith("mosaic") else "—"
            print(f"| {r['context']} | {mode} | {1e3 * r['fwd']:.1f} | {plan} | {1e3 * r['e2e']:.1f} | {ratio('fwd')} | "
                  f"{ratio('e2e')} | {r['attended'] or '—'} | {r['host_tokens'] if r['host_tokens'] is not None else '—'} | "
                  f"{r['prefill_s']:.1f} |")
    for mode in [m for m in results if m.startswith("mosaic")]:
        rows = results[mode]
        if len(rows) > 1:
            lo, hi = rows[contexts[0]], rows[contexts[-1]]
            print(f"{mode}: forward grows {hi['fwd'] / lo['fwd']:.2f}x from {lo['context']} to {hi['context']} tokens")


if __name__ == "__main__":
    main()
