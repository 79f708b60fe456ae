"""Helpers for tests that run a real ``sgl.Engine`` on the CPU."""

from __future__ import annotations

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
