"""Serving-level device KV: SGLang's dense backend vs Mosaic with the host tier, through `sgl.Engine`.

For each video length, one synthetic clip (PyAV) is asked two questions in a row on the embedded tiny
Qwen2.5-VL (random weights; CPU): the first question prefills the video in chunks (chunked prefill, as a
stream arrives), the second reuses the cached prefix. Mosaic: the host tier on, a 32-token recent window,
`MosaicConfig`'s defaults otherwise. Measured per question, side by side in one run:

- ``context``: tokens the question's forward sees (prompt + answer);
- ``device``: KV slots of the request that live in SGLang's pool — dense: every context token; Mosaic:
  the largest count over the request's forwards (``max_device_tokens``: sinks, text, active frames and
  the chunk in flight; sealed clusters are on the host);
- ``cache``: Mosaic's device cluster cache for the video (pool slots holding clusters copied back), so
  device + cache is what the sequence occupies on the device;
- ``host``: the request's tokens in the host store; ``copies``: host→device cluster copies it made;
- ``s``: wall time of the question (CPU, tiny model: plumbing cost, not a speed claim).

    .venv/bin/python benchmarks/serving_memory.py             # 8/16/32/48 s clips (~6 min on 2 cores)
    .venv/bin/python benchmarks/serving_memory.py --quick     # 8/16 s
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"
QUESTIONS = ("what happens in the video?", "what color is the last scene?")


def engine_kwargs(model: str, mode: str, args) -> dict:
    kwargs = dict(model_path=model, device="cpu", sampling_backend="pytorch", grammar_backend="none",
                  skip_server_warmup=True, dtype="float32", max_total_tokens=args.pool_tokens, log_level="error",
                  chunked_prefill_size=args.chunk)
    if mode == "dense":
        kwargs["attention_backend"] = "torch_native"
    else:
        kwargs.update(enable_mosaic=True, mosaic_budget=args.budget,
                      mosaic_config={"sink_tokens": 4, "recent_window": 32, "host_store_tokens": 1 << 16})
    return kwargs


def ask(engine, video: str, question: str, max_new_tokens: int) -> dict:
    t0 = time.perf_counter()
    out = engine.generate(prompt=PROMPT.format(question=question), video_data=[video],
                          sampling_params={"max_new_tokens": max_new_tokens, "temperature": 0.0})
    seconds = time.perf_counter() - t0
    meta = out["meta_info"]
    context = int(meta["prompt_tokens"]) + int(meta["completion_tokens"]) - 1
    stats = (meta.get("mosaic") or [None])[-1]
    if stats is None:  # dense: every token of the context is a pool slot
        return dict(context=context, device=context, cache=0, host=0, copies=0, s=seconds, cached=int(meta["cached_tokens"]))
    return dict(context=context, device=stats["max_device_tokens"], cache=stats["cluster_cache_tokens"],
                host=stats["host_tokens"], copies=stats.get("host_copies", 0), s=seconds, cached=int(meta["cached_tokens"]),
                attended=stats["attended_tokens"])


def run_mode(model: str, mode: str, videos: dict, args) -> dict:
    import sglang as sgl

    engine = sgl.Engine(**engine_kwargs(model, mode, args))
    results = {}
    try:
        for seconds, video in videos.items():
            rows = [ask(engine, video, q, args.max_new_tokens) for q in QUESTIONS]
            results[seconds] = rows
            engine.flush_cache()
    finally:
        engine.shutdown()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seconds", type=int, nargs="*", default=None, help="clip lengths (4 fps)")
    p.add_argument("--budget", type=int, default=256, help="Mosaic budget (tokens per layer)")
    p.add_argument("--chunk", type=int, default=256, help="chunked prefill size")
    p.add_argument("--pool-tokens", type=int, default=32768, help="SGLang max_total_tokens")
    p.add_argument("--max-new-tokens", type=int, default=4)
    args = p.parse_args()
    seconds_list = args.seconds or ([8, 16] if args.quick else [8, 16, 32, 48])  # 64 s is past the 8K context

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from mosaic_sglang.frontend.video import make_synthetic_video
    from mosaic_sglang.testing.tiny_models import build_tiny_model

    model = str(build_tiny_model("qwen2_5_vl"))
    workdir = Path(tempfile.mkdtemp(prefix="mosaic_serving_memory_"))
    videos = {s: str(make_synthetic_video(workdir / f"clip{s}.mp4", num_frames=4 * s, fps=4, size=112,
                                          num_scenes=max(1, s // 4), seed=s)) for s in seconds_list}
    print(f"tiny Qwen2.5-VL (random weights), CPU, {os.cpu_count()} cores; budget {args.budget}, chunk {args.chunk}; "
          f"clips {seconds_list} s at 4 fps, 112 px")
    dense = run_mode(model, "dense", videos, args)
    mosaic = run_mode(model, "mosaic", videos, args)
    print("\n| clip | question | context | dense device | mosaic device | mosaic cache | device ratio | host | copies | attended | dense s | mosaic s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in seconds_list:
        for i, (d, m) in enumerate(zip(dense[s], mosaic[s])):
            assert d["context"] == m["context"], (d, m)
            ratio = d["device"] / max(1, m["device"] + m["cache"])
            print(f"| {s} s | Q{i + 1} | {d['context']} | {d['device']} | {m['device']} | {m['cache']} | {ratio:.1f}x | "
                  f"{m['host']} | {m['copies']} | {m['attended']} | {d['s']:.1f} | {m['s']:.1f} |")
    print("\ndevice ratio = dense device ÷ (mosaic device + mosaic cache), per question")


if __name__ == "__main__":
    main()
