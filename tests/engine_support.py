"""Helpers for tests that run a real ``sgl.Engine`` on the CPU."""

from __future__ import annotations

import contextlib
import os

VIDEO_PROMPT = (
    "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"
)


def cpu_engine_kwargs(model_path: str, **overrides) -> dict:
    kwargs = dict(
        model_path=model_path,
        device="cpu",
        sampling_backend="pytorch",
        grammar_backend="none",
        skip_server_warmup=True,
        dtype="float32",
        max_total_tokens=8192,
        log_level="error",
    )
    kwargs.update(overrides)
    return kwargs


def greedy(max_new_tokens: int = 6) -> dict:
    return {"max_new_tokens": max_new_tokens, "temperature": 0.0}


def run_requests(engine, requests: list[dict]) -> list[dict]:
    """Run requests one after another (so each can reuse the previous one's prefix)."""
    outputs = []
    for req in requests:
        out = engine.generate(sampling_params=greedy(req.get("max_new_tokens", 6)), return_logprob=True, **req["inputs"])
        meta = out["meta_info"]
        outputs.append(
            {
                "output_ids": list(out["output_ids"]),
                "logprobs": [float(x[0]) for x in meta["output_token_logprobs"]],
                "prompt_tokens": int(meta["prompt_tokens"]),
                "cached_tokens": int(meta["cached_tokens"]),
                "mosaic": meta.get("mosaic"),
            }
        )
    return outputs


STRICT_CHECK_ENV = {
    "SGLANG_ENABLE_STRICT_MEM_CHECK_DURING_BUSY": "1",  # pool ledger checked while requests run
    "SGLANG_CHECK_KV_PAGE_INVARIANTS": "1",  # no owner row points at a free page, no double free
    "MOSAIC_DEBUG": "1",  # host tier + cluster caches check_integrity after every change
}
"""Environment for engines/servers started inside `strict_checks()`: a leaked or double-freed slot, a wrong
ledger or a corrupt host tier kills the scheduler (SGLang's idle memory check is on by default)."""


@contextlib.contextmanager
def strict_checks():
    """Set `STRICT_CHECK_ENV` for the processes started inside (children inherit it); restore after."""
    saved = {k: os.environ.get(k) for k in STRICT_CHECK_ENV}
    os.environ.update(STRICT_CHECK_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def assert_same_answers(expected: list[dict], got: list[dict], tol: float) -> None:
    """The same tokens, and every logprob within ``tol``, request by request (`run_requests` outputs)."""
    assert len(expected) == len(got)
    for x, y in zip(expected, got):
        assert x["output_ids"] == y["output_ids"]
        diff = max(abs(p - q) for p, q in zip(x["logprobs"], y["logprobs"]))
        assert diff <= tol, f"max logprob difference {diff:.3g}"
