"""Turn 2 on the same video: no second decode. ``sgl.function`` programs with Mosaic's `video()` on an
in-process ``sgl.Engine`` (tiny Qwen2.5-VL, CPU, ``--enable-mosaic`` with `MosaicConfig`'s defaults and
budget 256), two questions about one long
synthetic clip, with the frontend's `ClipCache` on and off, side by side in one run.

Per turn: ``prepare_s`` = client time to decode, sample and encode the clip (0 on a cache hit),
``turn_s`` = the whole program run (client + server), ``decodes`` = files decoded by the client so far,
``cached`` = prompt tokens the server's radix cache served (the video's KV from turn 1).

    .venv/bin/python benchmarks/video_turns.py            # 3-minute 30 fps clips, ~1.5 min on 2 cores
    .venv/bin/python benchmarks/video_turns.py --quick    # smoke size
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import sglang as sgl


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=180, help="clip length")
    p.add_argument("--fps", type=int, default=30, help="clip frame rate (what the client decodes)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--max-frames", type=int, default=16, help="frames sent to the model")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.fps, args.size, args.max_frames = 20, 10, 64, 4
    return args


def main(argv=None) -> list[dict]:
    from mosaic_sglang.frontend import program_video as pv
    from mosaic_sglang.frontend.clip_cache import ClipCache
    from mosaic_sglang.frontend.engine_backend import EngineBackend
    from mosaic_sglang.frontend.video import make_synthetic_video
    from mosaic_sglang.testing.tiny_models import build_tiny_model

    args = _args(argv)
    model = str(build_tiny_model("qwen2_5_vl"))
    workdir = Path(tempfile.mkdtemp(prefix="video_turns_"))
    def clip(seed: int) -> str:
        """A fresh clip per setting: the server caches vision embeddings by content, so settings sharing a
        file would hand each other turn 1's vision-encoder work."""
        return str(make_synthetic_video(workdir / f"long{seed}.mp4", num_frames=args.seconds * args.fps,
                                        fps=args.fps, size=args.size, num_scenes=4, seed=seed))

    class TimedCache(ClipCache):
        prepare_s = 0.0

        def get(self, path, options):
            start = time.perf_counter()
            try:
                return super().get(path, options)
            finally:
                self.prepare_s += time.perf_counter() - start

    @sgl.function
    def ask(s, path, question):
        s += sgl.user(pv.video(path, fps=1, max_frames=args.max_frames) + question)
        s += sgl.assistant(sgl.gen("answer", max_tokens=4, temperature=0))

    engine = sgl.Engine(model_path=model, device="cpu", sampling_backend="pytorch", grammar_backend="none",
                        skip_server_warmup=True, dtype="float32", max_total_tokens=16384, log_level="error",
                        enable_mosaic=True, mosaic_budget=256)
    backend = EngineBackend(engine)
    rows = []
    try:
        pv.install_video_executor(ClipCache())
        for seed in (3, 4):  # first-video costs out of the table
            warm = ask.run(path=clip(seed), question="warm-up?", backend=backend)
            warm.sync()
            assert warm.error() is None, warm.error()
            engine.flush_cache()
        pv.uninstall_video_executor()
        for seed, (label, max_bytes) in enumerate((("cache on", 256 << 20), ("cache off", 0)), 5):
            path = clip(seed)
            cache = TimedCache(max_bytes=max_bytes)
            pv.install_video_executor(cache)
            engine.flush_cache()  # each setting starts from an empty radix cache
            for turn, question in enumerate(("what happens first?", "and what happens last?"), 1):
                before = cache.prepare_s
                start = time.perf_counter()
                state = ask.run(path=path, question=question, backend=backend)
                state.sync()  # run() returns at once; the program runs on the executor's thread
                assert state.error() is None, state.error()
                turn_s = time.perf_counter() - start
                meta = state.get_meta_info("answer")
                rows.append(dict(setting=label, turn=turn, prepare_s=cache.prepare_s - before, turn_s=turn_s,
                                 decodes=cache.decodes, cached=meta.get("cached_tokens", 0),
                                 prompt=meta.get("prompt_tokens", 0)))
            pv.uninstall_video_executor()
    finally:
        backend.shutdown()
        engine.shutdown()
    print(f"clip: {args.seconds} s at {args.fps} fps, {args.size}px ({args.seconds * args.fps} frames); "
          f"{args.max_frames} sent per turn; tiny Qwen2.5-VL on CPU with Mosaic")
    print(f"{'setting':>10} {'turn':>4} {'prepare_s':>9} {'turn_s':>7} {'decodes':>7} {'cached':>7} {'prompt':>7}")
    for r in rows:
        print(f"{r['setting']:>10} {r['turn']:>4} {r['prepare_s']:>9.3f} {r['turn_s']:>7.3f} {r['decodes']:>7} "
              f"{r['cached']:>7} {r['prompt']:>7}")
    on = [r for r in rows if r["setting"] == "cache on"]
    print(f"turn 2 / turn 1 with the cache: {on[1]['turn_s'] / on[0]['turn_s']:.3f}")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
