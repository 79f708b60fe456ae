"""Small seeded video-like key streams and an attention-mass recall for the cluster-index tests.

Self-contained on purpose (the benchmark's generator lives in `mosaic_sglang.traces`): tests must not
move when the benchmark's trace knobs are retuned.
"""

from __future__ import annotations

import torch

from mosaic_sglang.config import ONLINE_SHARED
from mosaic_sglang.retrieval import Selection

ONLINE = ONLINE_SHARED
"""The online index, one membership and one cluster list per layer: what the tests of assignment,
selection and budget accounting read. The defaults regroup sealed spans by k-means, keep one
membership per layer and select per KV head; those modes have tests of their own (test_cluster_regroup.py,
test_regroup_tail.py, test_per_head_selection.py)."""


def video_stream(
    *,
    seed: int = 0,
    num_layers: int = 3,
    num_kv_heads: int = 2,
    head_dim: int = 12,
    num_frames: int = 8,
    tokens_per_frame: int = 21,
    text_per_frame: int = 2,
    objects: int = 6,
    noise: float = 0.3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A stream of frames made of recurring objects, with text tokens before every frame.

    Returns:
        ``(keys [L, N, H, D] float32, frame_ids [N] int64, object_of [N] int64 (-1 for text))``.
    """
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(objects, num_layers, num_kv_heads, head_dim, generator=g) * 2.0
    keys, fids, objs = [], [], []
    for f in range(num_frames):
        keys.append(torch.randn(text_per_frame, num_layers, num_kv_heads, head_dim, generator=g))
        fids += [-1] * text_per_frame
        objs += [-1] * text_per_frame
        # Each frame shows 3 objects of a slowly rotating cast, in contiguous patches.
        cast = [(f // 3 + i) % objects for i in range(3)]
        obj = torch.tensor(cast).repeat_interleave(-(-tokens_per_frame // 3))[:tokens_per_frame]
        keys.append(protos[obj] + noise * torch.randn(tokens_per_frame, num_layers, num_kv_heads, head_dim, generator=g))
        fids += [f] * tokens_per_frame
        objs += obj.tolist()
    keys_t = torch.cat(keys).permute(1, 0, 2, 3).contiguous()
    return keys_t, torch.tensor(fids, dtype=torch.int64), torch.tensor(objs, dtype=torch.int64)


def object_queries(keys: torch.Tensor, object_of: torch.Tensor, target: int, *, num_qo_heads: int,
                   num_tokens: int = 3, gain: float = 3.0, seed: int = 0) -> torch.Tensor:
    """``[L, Tq, Hq, D]`` queries aimed at object ``target`` (its mean key, scaled, plus noise)."""
    g = torch.Generator().manual_seed(seed)
    num_layers, _, num_kv_heads, head_dim = keys.shape
    centre = keys[:, object_of == target].mean(1)  # [L, H, D]
    centre = centre.repeat_interleave(num_qo_heads // num_kv_heads, dim=1)  # [L, Hq, D]
    q = centre[:, None] * gain / centre.norm(dim=-1, keepdim=True)[:, None] * head_dim**0.5 / 2
    return q + 0.1 * torch.randn(num_layers, num_tokens, num_qo_heads, head_dim, generator=g)


def mass_recall(queries: torch.Tensor, keys: torch.Tensor, selection: Selection) -> float:
    """Mean over layers, query tokens and heads of the true softmax weight on the attended set."""
    num_layers, _, hq, d = queries.shape
    k = keys.repeat_interleave(hq // keys.shape[2], dim=2)  # [L, N, Hq, D]
    probs = torch.softmax(torch.einsum("lthd,lnhd->lthn", queries, k) / d**0.5, dim=-1)
    total = 0.0
    for layer in range(num_layers):
        total += float(probs[layer][..., selection.layer(layer)].sum(-1).mean())
    return total / num_layers
