"""The README's main command (`scripts/run_demo.sh` → `examples/stream_demo.py`) end to end: a server
with Mosaic and streaming sessions, 6 chunks, 3 questions between them, stats printed, clean shutdown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.timeout(480)]

ROOT = Path(__file__).resolve().parent.parent


def test_stream_demo_runs_end_to_end(tmp_path):
    import os

    import torch

    dump = tmp_path / "dump"  # the server's selection dump: its tail regroups
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "stream_demo.py"), "--speed", "1000"],
                         capture_output=True, text=True, timeout=450, cwd=ROOT, env={**os.environ, "MOSAIC_DUMP_DIR": str(dump)})
    assert out.returncode == 0, out.stderr[-3000:]
    # the chunks are prefill-only turns: their ends leave the tail online; each question's prompt regroups it
    events = [torch.load(p, weights_only=False)["event"] for p in sorted(dump.glob("*.pt"))]
    assert 1 <= events.count("regroup_tail") <= 3, events.count("regroup_tail")
    chunks = re.findall(r"^chunk +(\d+): .*cached +(\d+) of +(\d+) tokens", out.stdout, re.M)
    assert [int(c[0]) for c in chunks] == [1, 2, 3, 4, 5, 6], out.stdout
    assert all(int(cached) > 0 for _, cached, _ in chunks[1:])  # every later chunk reuses the session's KV
    stats = re.findall(r"^  after +\d+ s: cached (\d+) / context (\d+) / attended (\d+)", out.stdout, re.M)
    assert len(stats) == 3, out.stdout
    assert all(int(attended) < int(context) for _, context, attended in stats)  # sparse: the budget binds
    assert "server shut down cleanly" in out.stdout
