"""Block-diagonal vision attention without an s×s mask, for SGLang's CPU ``sdpa`` vision backend.

SGLang's ``VisionSdpaAttention`` (``flatten_batch=True``, as Qwen2.5-VL uses it) turns ``cu_seqlens``
into a dense ``[1, s, s]`` boolean mask over every patch of the request and runs one masked SDPA: memory
and time grow with the square of the video's patch count (a 2048-token clip is 8192 patches; a 16K-token
video's mask and attention weights do not fit in 24 GiB). The same attention is a batch of independent
segments: `segmented_attention` groups the segments by length and runs one unmasked SDPA per length.
Same math, so only rounding can differ from the masked call (tested).

Registered by `plugin.register` as an AROUND hook on ``VisionSdpaAttention.forward``; it takes over only
for CPU tensors in the flattened layout without a caller-given mask, and hands everything else (CUDA,
explicit masks, fp32-softmax mode) to SGLang unchanged.
"""

from __future__ import annotations

import torch
from torch.nn.functional import scaled_dot_product_attention

__all__ = ["VISION_ATTENTION_TARGET", "segmented_attention", "register_vision_attention"]

VISION_ATTENTION_TARGET = "sglang.srt.layers.attention.vision.VisionSdpaAttention.forward"


def segmented_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, *,
                        scale: float, dropout_p: float = 0.0) -> torch.Tensor:
    """Non-causal attention within each segment ``[cu_seqlens[i], cu_seqlens[i+1])``.

    Args:
        q, k, v: ``[s, heads, head_dim]`` (one head count for all three).
        cu_seqlens: ``[n + 1]`` int, non-decreasing, ``cu_seqlens[-1] == s``.
        scale: softmax scale.

    Returns:
        ``[s, heads, head_dim]``; rows outside every segment are zero.
    """
    bounds = torch.as_tensor(cu_seqlens).to("cpu", torch.int64)
    starts, lengths = bounds[:-1], bounds[1:] - bounds[:-1]
    out = torch.zeros_like(q)
    for length in torch.unique(lengths[lengths > 0]).tolist():
        first = starts[lengths == length]  # [m] segments of this length
        rows = (first[:, None] + torch.arange(length)).flatten()  # [m * length]
        shape = (first.numel(), length) + tuple(q.shape[1:])

        def gather(x):
            return x[rows].reshape(shape).transpose(1, 2)  # [m, heads, length, head_dim]

        attn = scaled_dot_product_attention(gather(q), gather(k), gather(v), dropout_p=dropout_p, scale=scale)
        out[rows] = attn.transpose(1, 2).reshape((-1,) + tuple(q.shape[1:]))
    return out


def _forward(original, self, q, k, v, bsz, cu_seqlens=None, attention_mask=None, **kwargs):
    if (q.is_cuda or cu_seqlens is None or attention_mask is not None or bsz != 1 or not self.flatten_batch
            or self.softmax_in_single_precision or q.dim() != 3 or self.num_heads != self.num_kv_heads):
        return original(self, q, k, v, bsz, cu_seqlens=cu_seqlens, attention_mask=attention_mask, **kwargs)
    heads = (-1, self.num_heads, self.head_size)
    out = segmented_attention(q.reshape(heads), k.reshape(heads), v.reshape(heads), cu_seqlens,
                              scale=self.scale, dropout_p=self.dropout)
    return out.reshape(q.shape[0], self.num_heads, self.head_size)


def register_vision_attention(registry, hook_type) -> bool:
    """Install the hook where torch has no CUDA (the CPU recipe); returns whether it was."""
    if torch.cuda.is_available():
        return False
    registry.register(VISION_ATTENTION_TARGET, _forward, hook_type.AROUND)
    return True
