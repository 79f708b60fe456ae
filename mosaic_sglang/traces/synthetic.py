"""A generator of video-like KV traces with known structure and a planted needle event.

How a trace is made (every number below is a field of `SyntheticTraceSpec`):

1. **Content vectors** (``content_dim``-dimensional, the "meaning" of a token, shared by all layers):
   - a video of ``num_frames`` frames, each a ``grid × grid`` patch grid (``grid²`` visual tokens);
   - ``num_scenes`` scenes of near-equal length; a scene has a background vector, a per-grid-cell
     texture (``texture_scale``) and ``objects_per_scene`` objects drawn from a shared pool of
     ``object_pool`` objects, so objects recur across scenes;
   - an object covers an ``object_size × object_size`` square of patches whose position drifts by
     ``object_speed`` patches per frame (bouncing off the borders); each of its patches adds a per-part
     offset (``part_scale``) to the object's vector;
   - the **needle**: a unique object (never in the pool), ``needle_size`` patches square, shown in
     ``needle_frames`` consecutive frames starting at fraction ``needle_time`` of the video, always next
     to one pool object (the "anchor", which also appears elsewhere);
   - every visual token gets a per-frame jitter (``frame_jitter``: camera, light) and iid noise
     (``token_noise``); visual and text tokens are offset by ``±modality_gap/2`` along a fixed
     direction (real VLM keys separate the modalities);
   - text: a ``prompt_tokens`` prefix, ``timestamp_tokens`` before every frame, ``question_tokens`` at
     the end; text contents come from a small random vocabulary (``text_vocab`` words).
2. **Keys/values** per (layer, KV head): independent Gaussian projections ``content_dim → head_dim`` of the
   content, so layers share structure but not geometry, plus a shared per-(layer, head) key offset
   (``key_bias``: real keys have a large common component, which shifts every logit alike). Keys are
   then rotated by RoPE (``rope_theta``; 0 disables) at their positions; the content energy of the
   fastest-rotating half of the channel pairs is scaled by ``high_freq_content`` (trained models keep
   long-range semantics in slow channels, otherwise no long-context retrieval would survive RoPE).
3. **Queries** of the question tokens: content ``query_needle_weight · needle + query_anchor_weight ·
   anchor + rest · question-word`` (unit norm), projected with the same per-(layer, KV head) key
   projection (every query head of a group gets its own small perturbation, ``head_spread``), rotated by
   RoPE at the question positions, then scaled per (layer, query head) so that the needle's mean logit is
   ``needle_logit_gap`` above the mean visual token's (how hard the question points at the event; the
   spread of the other logits comes from the random geometry, not from this knob).

The generator does not know about any retrieval method; defaults are middle-of-the-road values, not
tuned for any method (see ``benchmarks/README.md`` for the numbers they give).

Deterministic: the same spec (seed included) gives bitwise the same trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .trace import Trace

__all__ = ["SyntheticTraceSpec", "synthetic_trace"]


@dataclass(frozen=True)
class SyntheticTraceSpec:
    """Every knob of the synthetic trace (see the module docstring for how each is used)."""

    seed: int = 0
    num_layers: int = 4
    num_kv_heads: int = 2
    num_qo_heads: int = 8
    head_dim: int = 64
    num_frames: int = 128
    grid: int = 8
    """Patches per side: 64 tokens per frame, the order of Qwen2.5-VL's merged tokens at 224² input."""
    num_scenes: int = 8
    object_pool: int = 24
    objects_per_scene: int = 3
    object_size: int = 3
    object_speed: float = 0.3
    part_scale: float = 0.3
    texture_scale: float = 0.5
    frame_jitter: float = 0.15
    token_noise: float = 0.3
    modality_gap: float = 1.0
    content_dim: int = 64
    text_vocab: int = 64
    prompt_tokens: int = 24
    timestamp_tokens: int = 2
    question_tokens: int = 16
    needle_frames: int = 4
    needle_time: float = 0.37
    needle_size: int = 3
    query_needle_weight: float = 0.6
    query_anchor_weight: float = 0.3
    needle_logit_gap: float = 5.0
    head_spread: float = 0.3
    key_bias: float = 1.0
    rope_theta: float = 1e6
    """Qwen2.5-VL's RoPE base."""
    high_freq_content: float = 0.3

    def __post_init__(self) -> None:
        if self.num_qo_heads % self.num_kv_heads:
            raise ValueError(f"num_qo_heads={self.num_qo_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even (RoPE pairs), got {self.head_dim}")
        if not 0 <= self.needle_time < 1 or self.needle_frames < 1 or self.needle_frames > self.num_frames:
            raise ValueError(f"needle: expected 0 <= needle_time < 1 and 1 <= needle_frames <= num_frames, got "
                             f"{self.needle_time=}, {self.needle_frames=}")
        if self.query_needle_weight**2 + self.query_anchor_weight**2 > 1:
            raise ValueError("query_needle_weight² + query_anchor_weight² must be <= 1 (unit-norm query content)")
        if self.object_size > self.grid or self.needle_size > self.grid or self.num_scenes > self.num_frames:
            raise ValueError("object_size/needle_size must fit the grid and num_scenes <= num_frames")

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid

    @property
    def num_tokens(self) -> int:
        per_frame = self.tokens_per_frame + self.timestamp_tokens
        return self.prompt_tokens + self.num_frames * per_frame + self.question_tokens


def synthetic_trace(spec: SyntheticTraceSpec = SyntheticTraceSpec()) -> Trace:
    """Generate a trace (shapes in `Trace`; ``N = spec.num_tokens``, ``Tq = spec.question_tokens``).

    Example:
        >>> t = synthetic_trace(SyntheticTraceSpec(num_frames=8, num_scenes=2))
        >>> tuple(t.keys.shape), tuple(t.queries.shape)
        ((4, 568, 2, 64), (4, 16, 8, 64))
    """
    g = torch.Generator().manual_seed(spec.seed)
    content, frame_ids, needle, anchor_vec, needle_vec = _content(spec, g)
    n = content.shape[0]
    question = torch.arange(n - spec.question_tokens, n)

    c = spec.content_dim
    w_k = torch.randn(spec.num_layers, spec.num_kv_heads, spec.head_dim, c, generator=g)
    w_v = torch.randn(spec.num_layers, spec.num_kv_heads, spec.head_dim, c, generator=g)
    bias = torch.randn(spec.num_layers, 1, spec.num_kv_heads, spec.head_dim, generator=g) * spec.key_bias
    w_k = w_k * _channel_weights(spec)[None, None, :, None]
    keys = torch.einsum("lhdc,nc->lnhd", w_k, content) + bias
    values = torch.einsum("lhdc,nc->lnhd", w_v, content) / math.sqrt(c)

    words = _unit(torch.randn(spec.question_tokens, c, generator=g))  # what else the question asks
    rest = math.sqrt(max(0.0, 1 - spec.query_needle_weight**2 - spec.query_anchor_weight**2))
    q_content = spec.query_needle_weight * needle_vec + spec.query_anchor_weight * anchor_vec + rest * words  # [Tq, C]
    group = spec.num_qo_heads // spec.num_kv_heads
    w_q = w_k.repeat_interleave(group, dim=1)  # [L, Hq, D, C]: query head i reads KV head i // group
    w_q = w_q + spec.head_spread * torch.randn(w_q.shape, generator=g) * w_q.std()
    queries = torch.einsum("lhdc,tc->lthd", w_q, q_content)

    if spec.rope_theta > 0:
        keys = _rope(keys, torch.arange(n), spec.rope_theta)
        queries = _rope(queries, question, spec.rope_theta)
    queries = queries * _gap_scale(spec, queries, keys, frame_ids, needle)
    return Trace(keys.contiguous(), values.contiguous(), frame_ids, queries.contiguous(), question, needle)


def _gap_scale(spec: SyntheticTraceSpec, queries, keys, frame_ids, needle) -> torch.Tensor:
    """``[L, 1, Hq, 1]`` scale making each (layer, query head)'s mean needle logit exceed its mean visual
    logit by ``needle_logit_gap`` (averaged over the question's tokens)."""
    group = spec.num_qo_heads // spec.num_kv_heads
    k = keys.repeat_interleave(group, dim=2)  # [L, N, Hq, D]
    visual = frame_ids >= 0
    q_mean = queries.mean(1)  # [L, Hq, D]: mean logit is linear in q
    gap = torch.einsum("lhd,lhd->lh", q_mean, k[:, needle].mean(1) - k[:, visual].mean(1)) / math.sqrt(spec.head_dim)
    # A head whose query misses the needle entirely keeps a small positive gap rather than flipping sign.
    scale = spec.needle_logit_gap / gap.clamp_min(1e-3)
    return scale[:, None, :, None]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _channel_weights(spec: SyntheticTraceSpec) -> torch.Tensor:
    """``[D]`` content amplitude per channel: the fast-rotating half of the RoPE pairs gets ``high_freq_content``."""
    half = spec.head_dim // 2
    pair_weight = torch.ones(half)
    pair_weight[: half // 2] = spec.high_freq_content  # pairs 0.. rotate fastest (HF rotate_half layout)
    return torch.cat([pair_weight, pair_weight])


def _rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """HF-style RoPE (rotate_half layout) on ``[L, T, H, D]`` at ``positions [T]``."""
    d = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # [D/2]
    ang = positions.double()[:, None] * inv_freq[None, :]  # [T, D/2]
    cos = torch.cat([ang.cos(), ang.cos()], -1).float()[None, :, None, :]
    sin = torch.cat([ang.sin(), ang.sin()], -1).float()[None, :, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def _content(spec: SyntheticTraceSpec, g: torch.Generator):
    """Content vectors ``[N, C]``, frame ids ``[N]``, needle positions, the anchor's and needle's vectors."""
    c, grid, p = spec.content_dim, spec.grid, spec.tokens_per_frame
    modality = _unit(torch.randn(c, generator=g)) * (spec.modality_gap / 2)
    vocab = _unit(torch.randn(spec.text_vocab, c, generator=g))
    pool = _unit(torch.randn(spec.object_pool, c, generator=g))
    parts = torch.randn(spec.object_pool + 1, max(spec.object_size, spec.needle_size) ** 2, c, generator=g)
    parts = _unit(parts) * spec.part_scale
    needle_vec = _unit(torch.randn(c, generator=g))

    # Scenes: near-equal lengths with the boundaries jittered by up to a quarter scene.
    base = torch.linspace(0, spec.num_frames, spec.num_scenes + 1)
    jitter = (torch.rand(spec.num_scenes + 1, generator=g) - 0.5) * (spec.num_frames / spec.num_scenes / 2)
    bounds = (base + jitter).round().long().clamp(0, spec.num_frames)
    bounds[0], bounds[-1] = 0, spec.num_frames
    bounds = torch.cummax(bounds, 0).values
    scene_of_frame = torch.bucketize(torch.arange(spec.num_frames), bounds[1:-1], right=True)
    backgrounds = _unit(torch.randn(spec.num_scenes, c, generator=g))
    textures = _unit(torch.randn(spec.num_scenes, p, c, generator=g)) * spec.texture_scale
    scene_objects = torch.stack([torch.randperm(spec.object_pool, generator=g)[: spec.objects_per_scene]
                                 for _ in range(spec.num_scenes)])  # [S, k]

    needle_start = int(spec.needle_time * spec.num_frames)
    needle_start = min(needle_start, spec.num_frames - spec.needle_frames)
    anchor_slot = 0  # the needle appears beside the scene's first object
    anchor = int(scene_objects[scene_of_frame[needle_start], anchor_slot])

    pos = torch.rand(spec.num_scenes, spec.objects_per_scene, 2, generator=g) * (grid - spec.object_size)
    vel = _unit(torch.randn(spec.num_scenes, spec.objects_per_scene, 2, generator=g)) * spec.object_speed
    frames = []
    needle_local: list[torch.Tensor] = []
    for f in range(spec.num_frames):
        s = int(scene_of_frame[f])
        tok = backgrounds[s][None, :] + textures[s]  # [P, C]
        lo = pos[s].clone()
        for k in range(spec.objects_per_scene):
            tok = _paint(tok, pool[scene_objects[s, k]], parts[scene_objects[s, k]], lo[k], spec.object_size, grid)
        if needle_start <= f < needle_start + spec.needle_frames:
            at = (lo[anchor_slot] + spec.object_size).clamp(max=grid - spec.needle_size)  # beside the anchor
            tok = _paint(tok, needle_vec, parts[-1], at, spec.needle_size, grid)
            needle_local.append(_square(at, spec.needle_size, grid))
        else:
            needle_local.append(torch.empty(0, dtype=torch.int64))
        tok = tok + _unit(torch.randn(c, generator=g)) * spec.frame_jitter
        frames.append(tok)
        # Move the scene's objects, bouncing off the borders.
        nxt = pos[s] + vel[s]
        out = (nxt < 0) | (nxt > grid - spec.object_size)
        vel[s] = torch.where(out, -vel[s], vel[s])
        pos[s] = (pos[s] + vel[s]).clamp(0, grid - spec.object_size)

    pieces, fids, needle = [], [], []
    def text(count: int) -> None:
        if count:
            pieces.append(vocab[torch.randint(spec.text_vocab, (count,), generator=g)] - modality)
            fids.append(torch.full((count,), -1, dtype=torch.int64))

    text(spec.prompt_tokens)
    offset = spec.prompt_tokens
    for f, tok in enumerate(frames):
        text(spec.timestamp_tokens)
        offset += spec.timestamp_tokens
        noise = torch.randn(p, c, generator=g) * (spec.token_noise / math.sqrt(c))
        pieces.append(tok + noise + modality)
        fids.append(torch.full((p,), f, dtype=torch.int64))
        needle.append(needle_local[f] + offset)
        offset += p
    text(spec.question_tokens)
    return torch.cat(pieces), torch.cat(fids), torch.cat(needle), pool[anchor], needle_vec


def _square(at: torch.Tensor, size: int, grid: int) -> torch.Tensor:
    """``[size²] int64`` flat patch indices of the square whose top-left corner is ``round(at)``."""
    r, c = (int(v) for v in at.round().long().clamp(0, grid - size))
    rows = torch.arange(r, r + size)
    cols = torch.arange(c, c + size)
    return (rows[:, None] * grid + cols[None, :]).flatten()


def _paint(tok: torch.Tensor, vec: torch.Tensor, parts: torch.Tensor, at: torch.Tensor, size: int, grid: int):
    """Replace the patches of a ``size²`` square at ``at`` by ``vec`` + per-part offsets (objects occlude)."""
    idx = _square(at, size, grid)
    tok = tok.clone()
    tok[idx] = vec[None, :] + parts[: size * size]
    return tok
