"""The video serving load test: its numbers come out of SGLang's own metric code as they should (known
inputs, no server), its arguments are checked, and the benchmark runs end to end on the CPU (dense vs
Mosaic, 4 conversations with follow-ups and one live stream) writing bench_serving-shaped JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mosaic_sglang.frontend.evaluation.chat_stream import ChatResult
from mosaic_sglang.frontend.evaluation.serving_load import LoadRun, LoadSpec, bench_result

ROOT = Path(__file__).resolve().parent.parent

BENCH_SERVING_KEYS = ("backend", "dataset_name", "request_rate", "max_concurrency", "duration", "completed",
                      "total_input_tokens", "total_output_tokens", "request_throughput", "input_throughput",
                      "output_throughput", "mean_e2e_latency_ms", "median_e2e_latency_ms", "mean_ttft_ms",
                      "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "median_itl_ms", "p99_itl_ms",
                      "concurrency")


class _Tokenizer:  # counts words: enough for bench_serving's retokenized lengths
    def encode(self, text, add_special_tokens=False):
        return text.split()


def test_bench_result_from_known_turns():
    turns = [ChatResult(text="a b c", success=True, ttft=0.1, latency=0.5, itl=[0.2, 0.2], start_time=10.0,
                        prompt_tokens=100, completion_tokens=3, cached_tokens=0),
             ChatResult(text="a b c d e", success=True, ttft=0.3, latency=0.7, itl=[0.1] * 4, start_time=10.5,
                        prompt_tokens=120, completion_tokens=5, cached_tokens=100,
                        mosaic={"context_tokens": 124, "attended_tokens": 31, "max_device_tokens": 60,
                                "cluster_cache_tokens": 4}),
             ChatResult(success=False, error="HTTP 400: bad video", start_time=11.0, latency=0.01)]
    run = LoadRun(turns=turns, kinds=["first", "follow-up", "first"], chunk_seconds=[0.2, 0.4],
                  ask_seconds=[1.0], duration_s=2.0, peak_used_tokens=777, polls=9, started=2)
    r = bench_result(run, LoadSpec(videos=("v.mp4",), max_tokens=5), setting="x", tokenizer=_Tokenizer())
    assert all(k in r for k in BENCH_SERVING_KEYS)
    assert r["completed"] == 2 and r["total_input_tokens"] == 220 and r["total_output_tokens"] == 8
    assert r["mean_ttft_ms"] == pytest.approx(200.0) and r["median_ttft_ms"] == pytest.approx(200.0)
    assert r["mean_itl_ms"] == pytest.approx(1000 * (0.4 + 0.4) / 6)  # every gap of both streams
    assert r["output_throughput"] == pytest.approx(8 / 2.0) and r["request_throughput"] == pytest.approx(1.0)
    assert r["mean_e2e_latency_ms"] == pytest.approx(600.0)
    assert r["mean_tpot_ms"] == pytest.approx(1000 * ((0.5 - 0.1) / 2 + (0.7 - 0.3) / 4) / 2)
    assert r["peak_device_kv_tokens"] == 777 and r["turn_errors"] == ["HTTP 400: bad video"]
    assert r["attended_fraction"] == pytest.approx((1.0 + 31 / 124) / 2)  # dense turn attends all
    assert r["mean_request_device_kv_tokens"] == pytest.approx((102 + 64) / 2)
    assert r["streams"]["chunks"]["count"] == 2 and r["streams"]["chunks"]["median_ms"] == pytest.approx(300.0)
    assert r["turns"] == {"first": 2, "follow-up": 1}


@pytest.mark.parametrize("field,value,expected", [("conversations", -1, "integer >= 0"), ("rate", 0, "number > 0"),
                                                  ("max_concurrency", 0, "integer >= 1")])
def test_load_spec_names_the_bad_field(field, value, expected):
    with pytest.raises(ValueError, match=f"{field}: expected an? {expected}, got {value}"):
        LoadSpec(videos=("v.mp4",), **{field: value})
    with pytest.raises(ValueError, match="videos: expected at least one"):
        LoadSpec(videos=())


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.timeout(600)
def test_video_serving_benchmark_runs_dense_and_mosaic(tmp_path):
    output = tmp_path / "serving.jsonl"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "video_serving.py"), "--quick",
                          "--output-file", str(output)], capture_output=True, text=True, timeout=560, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["setting"] for r in results] == ["dense", "mosaic-48"]
    for r in results:
        assert all(k in r for k in BENCH_SERVING_KEYS), sorted(set(BENCH_SERVING_KEYS) - set(r))
        assert r["completed"] == 12 and r["turns"] == {"first": 4, "follow-up": 8} and r["turn_errors"] == []
        assert r["streams"]["chunks"]["count"] == 4 and r["streams"]["asks"]["count"] == 2 and not r["streams"]["errors"]
        assert 0 < r["median_ttft_ms"] <= r["p99_ttft_ms"] and 0 < r["median_itl_ms"] <= r["p99_itl_ms"]
        assert r["output_throughput"] > 0 and r["kv_polls"] > 0
        assert r["cached_tokens"] > 0  # follow-ups reuse the video prefix in both settings
    dense, mosaic = results
    assert dense["attended_fraction"] == 1.0 and mosaic["attended_fraction"] < 0.5
    assert max(dense["peak_device_kv_tokens"], mosaic["peak_device_kv_tokens"]) > 0
    assert "| dense | 12 |" in out.stdout and "| mosaic-48 | 12 |" in out.stdout
