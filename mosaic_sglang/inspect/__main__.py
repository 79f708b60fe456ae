"""``python -m mosaic_sglang.inspect DUMP_DIR [--out PNG] [--video UID]``."""

from __future__ import annotations

import argparse
import sys

from . import load_records, read_timeline, render


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mosaic_sglang.inspect",
                                     description="Plot what a Mosaic server attended, from its MOSAIC_DUMP_DIR dump.")
    parser.add_argument("dump_dir")
    parser.add_argument("--out", default="mosaic_inspect.png")
    parser.add_argument("--video", type=int, default=None, help="video uid (default: the longest indexed video)")
    args = parser.parse_args(argv)
    try:
        timeline = read_timeline(load_records(args.dump_dir), args.video)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = render(timeline, args.out)
    last = timeline.steps[-1]
    print(f"video {timeline.video}: {int((timeline.frame_ids >= 0).sum())} video tokens in {last.frames} frames, "
          f"{last.clusters} clusters, {len(timeline.questions)} question(s), "
          f"{int(timeline.on_host.sum())} tokens offloaded; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
