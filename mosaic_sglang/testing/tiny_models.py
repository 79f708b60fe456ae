"""Tiny, randomly initialised models that SGLang serves on a CPU: the embedded demo and test models.

No weights are downloaded: a byte-level BPE tokenizer is trained on a built-in corpus, configs come from
`transformers`, weights are random with a fixed seed, and everything is written to a folder SGLang can
load (``--model-path``). Building all models takes about 10 s and is cached by a content fingerprint.

Models:
    ``qwen2_5_vl``: Qwen2.5-VL architecture (vision tower + 2-layer text model), video-capable.
    ``qwen2``: text-only Qwen2 with the same tokenizer.
    ``qwen2_5_vl_longctx``: the VL model with Qwen2.5-VL-7B's attention shapes (28 query / 4 KV heads ×
        128 dims, GQA 7, mrope 16/24/24, hidden 3584) with a 512-wide MLP, 2 layers and
        128K positions, so attention over a long context, not the MLP, dominates a decode step
        (`benchmarks/decode_step.py`). Built only when asked for (``__main__`` builds the first two).
    ``qwen2_5_vl_kv4``: the VL model with 8 query / 4 KV heads × 16 dims (hidden 128): two KV heads per
        rank at tensor parallel size 2 (`tests/test_engine_tensor_parallel.py`). Built only when asked for.

Example:
    >>> path = build_tiny_model("qwen2_5_vl")          # doctest: +SKIP
    >>> # sglang.Engine(model_path=str(path), device="cpu", ...)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

__all__ = ["TINY_MODELS", "build_tiny_model", "default_cache_dir"]

TINY_MODELS = ("qwen2_5_vl", "qwen2", "qwen2_5_vl_longctx", "qwen2_5_vl_kv4")

# Special tokens take ids 0..7, in this order (Qwen's names, so SGLang's Qwen-VL processor finds them).
_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_IDS = dict(image_token_id=6, video_token_id=7, vision_start_token_id=3, vision_end_token_id=4)

_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ('video', 'video_url') %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] in ('image', 'image_url') %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "a red car drives past the old station while people walk across the square",
    "the dog runs toward the fountain and a child throws a yellow ball",
    "what color is the car in the video? the car is red.",
    "describe the scene: a kitchen with a table, two cups and a window",
    "the man opens the door, the cat jumps on the sofa, the light turns on",
    "how many people are in the room? there are three people.",
    "at the beginning a bird sits on a branch, later it flies away over the river",
    "question: what happened after the bus stopped? answer: passengers got off.",
    "frame 1 frame 2 frame 3 scene change: a beach with blue water and white sand",
    "user assistant system video image you are a helpful assistant.",
]

# Text tower shared by both models. initializer_range=0.5 makes greedy output vary with the input
# (with 0.02 a random model repeats one token, and exactness tests would prove little).
_TEXT = dict(
    vocab_size=640,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
    eos_token_id=2,
    bos_token_id=None,
    pad_token_id=0,
    initializer_range=0.5,
)
_ROPE = {"rope_type": "default", "rope_theta": 1e4}
_MROPE = {**_ROPE, "mrope_section": [2, 3, 3]}  # sums to head_dim / 2 = 8
# Per-model changes to the text tower and its mrope (keys of _TEXT, plus "mrope_section").
_TEXT_OVERRIDES = {
    "qwen2_5_vl_longctx": dict(hidden_size=3584, intermediate_size=512, num_attention_heads=28,
                               num_key_value_heads=4, head_dim=128, max_position_embeddings=131072,
                               mrope_section=[16, 24, 24]),  # sums to head_dim / 2 = 64
    "qwen2_5_vl_kv4": dict(hidden_size=128, intermediate_size=256, num_attention_heads=8, num_key_value_heads=4),
}


def default_cache_dir() -> Path:
    """``$MOSAIC_CACHE_DIR`` or ``~/.cache/mosaic_sglang``."""
    return Path(os.environ.get("MOSAIC_CACHE_DIR", Path.home() / ".cache" / "mosaic_sglang"))


def _fingerprint(name: str) -> str:
    import transformers

    extra = [_TEXT_OVERRIDES[name]] if name in _TEXT_OVERRIDES else []  # existing models keep their folders
    blob = json.dumps([name, _TEXT, _MROPE, _CORPUS, _CHAT_TEMPLATE, transformers.__version__, 4, *extra])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_tiny_model(name: str = "qwen2_5_vl", cache_dir: Path | None = None, seed: int = 0) -> Path:
    """Build (or reuse) the tiny model ``name`` and return its folder.

    Args:
        name: one of `TINY_MODELS`.
        cache_dir: parent folder; default `default_cache_dir()`.
        seed: weight initialisation seed.

    Raises:
        ValueError: ``name`` is not a known tiny model.
    """
    if name not in TINY_MODELS:
        raise ValueError(f"tiny model: expected one of {list(TINY_MODELS)}, got {name!r}")
    root = Path(cache_dir or default_cache_dir())
    out = root / f"tiny-{name}-{_fingerprint(name)}-s{seed}"
    if (out / "config.json").exists() and (out / ".complete").exists():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _build(name, tmp, seed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=_SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = _CHAT_TEMPLATE
    return fast


def _build(name: str, out: Path, seed: int) -> None:
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    tok = _tokenizer()
    if name == "qwen2":
        config = Qwen2Config(**_TEXT, rope_parameters=_ROPE)
        model = Qwen2ForCausalLM(config)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        return

    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    text = {**_TEXT, **_TEXT_OVERRIDES.get(name, {})}
    mrope = {**_MROPE, "mrope_section": text.pop("mrope_section", _MROPE["mrope_section"])}
    config = Qwen2_5_VLConfig(
        text_config={**text, "rope_parameters": mrope},
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=text["hidden_size"],
            patch_size=14,
            window_size=56,
            fullatt_block_indexes=[1],
        ),
        **_IDS,
    )
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    model.save_pretrained(out)
    processor = Qwen2_5_VLProcessor(  # what Qwen2.5-VL checkpoints ship: it emits second_per_grid_ts
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=56 * 56 * 4),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(size={"shortest_edge": 28 * 28 * 4, "longest_edge": 112 * 112 * 16}),
        chat_template=_CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    # sglang 0.5.23 reads vision_config.in_chans, which transformers 5.x writes as in_channels.
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["vision_config"]["in_chans"] = cfg["vision_config"].get("in_channels", 3)
    cfg_path.write_text(json.dumps(cfg, indent=2))


if __name__ == "__main__":
    for model_name in TINY_MODELS[:2]:
        print(build_tiny_model(model_name))
