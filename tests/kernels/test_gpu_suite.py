"""`benchmarks/gpu_suite.sh`: without CUDA it refuses loudly (exit 2, a message, no table, no folder); with
``--quick`` its whole chain runs on the CPU and every step leaves its content in ``results.json`` (each
kernel checked, every copy mode and decode variant measured), so a step that silently did nothing fails;
a failing step is named and makes the exit non-zero; the kernel check fails a wrong kernel. Nothing here
is a GPU number: the test asserts the run says so."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"
VARIANTS = {"dense_sdpa", "dense_k5", "mosaic_keep", "mosaic_select_only", "mosaic_reselect", "token_topk"}
KERNELS = {"sparse_decode", "cluster_scoring", "exact_fill", "emit_members", "assemble_always", "assign_tokens",
           "extent_copy.gather", "extent_copy.scatter", "sparse_extend"}

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the suite's CPU behaviour")


def _suite(*args, tmp_path, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("OUT", "TRITON_INTERPRET")}
    environ.update({"PYTHON": sys.executable, **env})
    return subprocess.run(["bash", str(SUITE), *args], cwd=tmp_path, env=environ, capture_output=True, text=True,
                          timeout=300)


def test_without_cuda_it_refuses_and_measures_nothing(tmp_path):
    done = _suite("--out", "suite", tmp_path=tmp_path)
    assert done.returncode == 2, done
    assert "gpu_suite: no CUDA device" in done.stderr and "nothing measured" in done.stderr
    assert "--quick" in done.stderr  # it says what to do instead
    assert "ms/step" not in done.stdout + done.stderr and not (tmp_path / "suite").exists()
    done = _suite(tmp_path=tmp_path, OUT=str(tmp_path / "from_env"))  # $OUT: the same refusal
    assert done.returncode == 2 and not (tmp_path / "from_env").exists()


def test_quick_runs_every_step_on_the_cpu(tmp_path):
    done = _suite("--quick", "--out", "suite", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "suite"
    assert "NOT GPU numbers" in done.stdout
    for step in ("machine", "kernel_check", "copy_bandwidth", "decode_step"):
        assert (out / f"{step}.txt").stat().st_size > 0, step
    results = json.loads((out / "results.json").read_text())
    assert results["gpu_numbers"] is False and results["failed_steps"] == []
    assert results["machine"]["quick"] is True and results["machine"]["triton_interpret"] == "1"

    checks = results["kernel_check"]["checks"]
    assert {c["kernel"] for c in checks} == KERNELS
    assert not any(c["ok"] is False for c in checks), [c for c in checks if c["ok"] is False]
    for kernel in KERNELS - {"sparse_extend"}:
        assert any(c["kernel"] == kernel and c["ok"] for c in checks), kernel
    assert any(c["kernel"] == "cluster_scoring" and "+always" in c["shape"] and c["ok"] for c in checks)  # share_of_total
    has_sglang = importlib.util.find_spec("sglang") is not None
    extend = [c for c in checks if c["kernel"] == "sparse_extend"]
    assert any(c["ok"] for c in extend) if has_sglang else all("sglang" in c["note"] for c in extend)
    assert any(c["dtype"] == "bf16" and c["ok"] is None and "interpreter" in c["note"] for c in checks)

    copies = results["copy_bandwidth"]["rows"]
    assert {(r["kind"], r["mode"], r["extent_tokens"]) for r in copies} == {("d2d", "copy", None), ("h2d", "one_copy", None)} \
        | {("h2d_extents", m, e) for m in ("per_extent", "per_run", "one_copy") for e in (8, 32, 64)}
    assert all(r["gbps"] > 0 and r["gpu_numbers"] is False for r in copies)

    decode = results["decode_step"]
    assert decode["gpu_numbers"] is False and not decode["failures"]
    assert {r["variant"] for r in decode["rows"]} == VARIANTS
    assert {r["budget"] for r in decode["rows"] if r["budget"] is not None} == {64, 128}
    assert len(decode["goals"]) == 2 and any("flashinfer: skipped" in n for n in decode["notes"])
    d2d = next(r["gbps"] for r in copies if r["kind"] == "d2d")
    assert decode["copy_gbps"] == pytest.approx(d2d)  # the floor uses the bandwidth the suite measured


def test_the_kernel_check_fails_a_wrong_kernel(monkeypatch, capsys):
    """A kernel off by 1e-2 in one output, or one index off by one, is a FAIL line and exit 1."""
    spec = importlib.util.spec_from_file_location("gpu_kernel_check", ROOT / "benchmarks" / "gpu_kernel_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    decode, fill = check._op("sparse_decode"), check._op("exact_fill")
    real_decode, real_fill = decode.sparse_decode, fill.exact_fill

    def off_decode(*args, out, **kwargs):
        real_decode(*args, out=out, **kwargs)
        out[0, 0, 0] += 1e-2
        return out

    def off_fill(*args, out, **kwargs):
        real_fill(*args, out=out, **kwargs)
        out[0, 0] += 1
        return out

    monkeypatch.setattr(decode, "sparse_decode", off_decode)
    monkeypatch.setattr(fill, "exact_fill", off_fill)
    env = check.Env(torch.device("cpu"), True, True)
    assert all(c.ok is False for c in check.check_sparse_decode(env) if c.ok is not None)
    assert all(c.ok is False for c in check.check_exact_fill(env))
    monkeypatch.setattr(check, "CHECKS", (check.check_exact_fill,))
    assert check.main([]) == 1 and "FAIL" in capsys.readouterr().out


def test_a_failing_step_is_named_and_the_exit_is_nonzero(tmp_path):
    """The kernel check fails (a stand-in interpreter exits 5 for it); the later steps still run, results.json
    lists the failure, the exit is 1 and stderr names the step."""
    python = tmp_path / "python"
    python.write_text(f'#!/usr/bin/env bash\ncase "$*" in\n  *gpu_kernel_check*) echo broken >&2; exit 5 ;;\n'
                      f'  *gpu_copy_bandwidth*|*gpu_decode_step*) exit 0 ;;\nesac\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    done = _suite("--quick", "--out", "suite", tmp_path=tmp_path, PYTHON=str(python))
    assert done.returncode == 1, done
    assert "gpu_suite: FAILED step: kernel_check (exit 5)" in done.stderr
    results = json.loads((tmp_path / "suite" / "results.json").read_text())
    assert results["failed_steps"] == ["kernel_check (exit 5)"] and results["kernel_check"] is None
