"""The accuracy benchmark end to end on the CPU: the synthetic needle set through a dense and a Mosaic
server (tiny random model: the mechanics, not the accuracy), and its report.

Both runs use the same two servers (started once, with streaming sessions on, as the benchmark starts
them for a streaming set), given to the script as ``--url NAME=URL``; the script's own server start-up
is exercised by `test_serving_load.py` (`video_serving.py` starts its servers through the same `serve`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mosaic_sglang.frontend.evaluation.paired_stats import wilson_interval

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.engine]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """``["dense=URL", "mosaic-48=URL"]``: the settings `video_qa_accuracy.py --quick` compares, running."""
    import contextlib

    from mosaic_sglang.frontend.evaluation.server_settings import build_settings, resolve_model, serve

    model, _ = resolve_model(None)
    logs = tmp_path_factory.mktemp("video_qa_servers")
    with contextlib.ExitStack() as stack:
        yield [f"{s.name}={stack.enter_context(serve(s, model, log_dir=logs))}"
               for s in build_settings([48], device="cpu", streaming=True)]


def _run(tmp_path, servers, *args):
    urls = [arg for spec in servers for arg in ("--url", spec)]
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "video_qa_accuracy.py"), "--quick",
                          "--out", str(tmp_path), *urls, *args], capture_output=True, text=True, timeout=560,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout, json.loads((tmp_path / "report.json").read_text())


def _check_rows(report, questions):
    dense, mosaic = report["summary"]
    assert [dense["setting"], mosaic["setting"]] == ["dense", "mosaic-48"]
    for row in (dense, mosaic):
        results = report["results"][row["setting"]]
        assert row["questions"] == questions == len(results) and row["failed"] == 0
        assert row["correct"] == sum(r["correct"] for r in results)  # the report counts what was answered
        assert row["accuracy_ci95"] == pytest.approx(list(wilson_interval(row["correct"], questions)))
        assert all(r["prompt_tokens"] > 0 and r["device_kv_tokens"] > 0 and r["ttft_s"] > 0 for r in results)
        assert row["peak_device_kv_tokens"] == max(r["device_kv_tokens"] for r in results)
    assert dense["attended_fraction"] == 1.0 and 0 < mosaic["attended_fraction"] < 1.0
    assert "diff_vs_baseline" in mosaic and 0 <= mosaic["mcnemar_p"] <= 1
    assert set(mosaic["accuracy_by_category"]) == {"digit", "shape", "color", "when"}
    return dense, mosaic


@pytest.mark.timeout(600)
def test_whole_video_questions_dense_vs_mosaic(tmp_path, servers):
    stdout, report = _run(tmp_path, servers)
    assert report["tiny_model"] and not report["streaming"] and report["questions"] == 8
    dense, mosaic = _check_rows(report, 8)
    # follow-up questions about the same video reuse its prefix through the radix cache
    assert any(r["cached_tokens"] > 0 for r in report["results"]["mosaic-48"])
    assert "MECHANICS ONLY" in stdout and "| dense |" in stdout and "| mosaic-48 |" in stdout
    assert (tmp_path / "report.md").read_text().startswith("| setting |")


@pytest.mark.timeout(600)
def test_streaming_needle_questions_through_sessions(tmp_path, servers):
    _, report = _run(tmp_path, servers, "--streaming-needle", "--needle-videos", "1")
    assert report["streaming"] and report["questions"] == 4
    _check_rows(report, 4)
    asked = sorted(report["results"]["dense"], key=lambda r: r["prompt_tokens"])
    assert asked[0]["prompt_tokens"] < asked[-1]["prompt_tokens"]  # later questions have seen more of the stream
