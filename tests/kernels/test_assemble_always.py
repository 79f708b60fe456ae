"""`assemble_always` (K4): the host descriptor (`merge_ranges`, `always_ranges`) against the mask it
stands for, the reference against `always_attended_mask` plus the tail past the index (what
`ClusterAttendedSet` plans), and the Triton kernel against the reference on seeded batches, positions
and slots, int32 and int64. Outputs are poisoned (-7) and requests laid out with gaps, so an unwritten
entry or a write outside a request fails."""

from __future__ import annotations

import pytest
import torch
from cluster_trace import video_stream  # tests/ is on the path (its conftest.py)
from kernel_support import DEVICE

from mosaic_sglang import MosaicConfig
from mosaic_sglang.kernels.assemble_always import (assemble_always, assemble_always_reference, always_ranges,
                                                   merge_ranges, pack_ranges)
from mosaic_sglang.retrieval.base import always_attended_mask

POISON = -7


def _frames(kind: str, n: int) -> torch.Tensor:
    """``[n] int64`` frame ids of a few stream shapes (``-1`` = text)."""
    if kind == "stream":  # text before every frame (the cluster tests' stream), cut to n
        return video_stream(num_frames=8, tokens_per_frame=21, text_per_frame=2)[1][:n]
    if kind == "text":
        return torch.full((n,), -1)
    if kind == "visual":
        return torch.arange(n) // 10
    if kind == "text-ends":  # text at both ends and a lone text token in the middle
        ids = torch.arange(n) // 7
        ids[:3] = ids[-4:] = ids[n // 2] = -1
        return ids
    raise AssertionError(kind)


# (frames, indexed_end, seq_len, sink_tokens, recent_window)
REQUESTS = [
    ("stream", 184, 184, 4, 16),  # served at the index's end
    ("stream", 150, 190, 3, 7),  # not-yet-indexed tail; the window is all tail
    ("stream", 150, 155, 3, 20),  # the window straddles the index's end
    ("visual", 63, 63, 0, 0),  # no sinks, no window: nothing
    ("visual", 30, 300, 64, 400),  # sinks and window beyond everything indexed
    ("text", 17, 20, 2, 3),  # all text
    ("text-ends", 90, 91, 1, 5),
    ("visual", 0, 37, 4, 8),  # a dense request: nothing indexed, all tail
]


def _expected(kind, indexed_end, seq_len, sinks, window) -> torch.Tensor:
    """What the serving policy plans: the mask's positions over the indexed prefix, then the tail."""
    cfg = MosaicConfig(sink_tokens=sinks, recent_window=window)
    mask = always_attended_mask(_frames(kind, indexed_end), cfg, seq_len=seq_len)
    return torch.cat([mask.nonzero().flatten(), torch.arange(indexed_end, seq_len)])


def _batch(requests, gen):
    """Descriptor, per-request tensors, gapped layout and buffer size of a batch of requests."""
    ranges = pack_ranges([always_ranges(_frames(k, e), sink_tokens=s, recent_window=w, seq_len=n)
                          for k, e, n, s, w in requests])
    indexed_end = torch.tensor([r[1] for r in requests])
    seq_len = torch.tensor([r[2] for r in requests])
    lengths = torch.stack([ranges.ends[ranges.indptr[b] : ranges.indptr[b + 1]].sum()
                           - ranges.starts[ranges.indptr[b] : ranges.indptr[b + 1]].sum() for b in range(len(requests))])
    lengths = lengths + seq_len - indexed_end
    gaps = torch.randint(1, 4, (len(requests),), generator=gen)
    ends = torch.cumsum(lengths + gaps, 0)
    return ranges, indexed_end, seq_len, ends - lengths, lengths, int(ends[-1]) + 3


@pytest.mark.parametrize("request_", REQUESTS, ids=[f"{k}-E{e}-N{n}-S{s}-W{w}" for k, e, n, s, w in REQUESTS])
def test_reference_is_always_attended_mask_plus_tail(request_):
    ranges, indexed_end, seq_len, offset, lengths, size = _batch([request_], torch.Generator().manual_seed(0))
    starts, ends = ranges.starts, ranges.ends
    assert bool((starts < ends).all()) and bool((ends[:-1] < starts[1:]).all())  # disjoint, ascending, merged
    out = torch.full((size,), POISON, dtype=torch.int64)
    assemble_always(ranges.indptr, starts, ends, indexed_end, seq_len, offset, max_ranges=ranges.max_ranges, out=out)
    got = out[int(offset[0]) : int(offset[0] + lengths[0])]
    assert torch.equal(got, _expected(*request_))
    assert int((out == POISON).sum()) == size - int(lengths[0])


BATCHES = [[0], [1, 3, 5, 7, 2], [4], [6, 0, 7, 1, 5, 3, 2, 4]]
OUTPUTS = ["positions-int64", "positions-int32", "slots-int32", "slots-int64"]


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("which", BATCHES, ids=[f"B{len(b)}-{''.join(map(str, b))}" for b in BATCHES])
def test_triton_equals_reference(which, output):
    gen = torch.Generator().manual_seed(len(which))
    requests = [REQUESTS[i] for i in which]
    ranges, indexed_end, seq_len, offset, lengths, size = _batch(requests, gen)
    kind, dtype = output.split("-")
    dtype = torch.int32 if dtype == "int32" else torch.int64
    r2t = token_row = None
    if kind == "slots":
        r2t = (torch.randperm(9 * 320, generator=gen).reshape(9, 320) + 1).to(dtype)  # SGLang: slot 0 is padding
        token_row = torch.randperm(9, generator=gen)[: len(requests)].to(dtype)
    want = torch.full((size,), POISON, dtype=dtype)
    args = (ranges.indptr, ranges.starts, ranges.ends, indexed_end, seq_len, offset)
    assemble_always_reference(*args, max_ranges=ranges.max_ranges, req_to_token=r2t, token_row=token_row, out=want)
    for b, req in enumerate(requests):  # the reference is the planned list (mapped to slots when asked)
        expected = _expected(*req)
        expected = expected if r2t is None else r2t[int(token_row[b])][expected]
        assert torch.equal(want[int(offset[b]) : int(offset[b] + lengths[b])], expected.to(dtype))
    got = torch.full((size,), POISON, dtype=dtype, device=DEVICE)
    to = (lambda t: None if t is None else t.to(DEVICE))
    res = assemble_always(*(to(t) for t in args), max_ranges=ranges.max_ranges, req_to_token=to(r2t),
                          token_row=to(token_row), out=got, impl="triton")
    assert res.data_ptr() == got.data_ptr()
    assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize("starts, ends, want", [
    ([], [], ([], [])),
    ([3], [3], ([], [])),  # empty ranges are dropped
    ([5, 0, 2, 9], [7, 3, 4, 9], ([0, 5], [4, 7])),  # unsorted, overlapping, one empty
    ([0, 3], [3, 5], ([0], [5])),  # touching ranges merge
    ([0, 2, 1], [10, 4, 12], ([0], [12])),  # nested, then extended
    ([8, 0], [9, 2], ([0, 8], [2, 9])),  # disjoint, out of order
])
def test_merge_ranges_examples(starts, ends, want):
    got = merge_ranges(torch.tensor(starts, dtype=torch.int64), torch.tensor(ends, dtype=torch.int64))
    assert (got[0].tolist(), got[1].tolist()) == want


@pytest.mark.parametrize("seed", range(4))
def test_merge_ranges_is_the_union(seed):
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, 60, (12,), generator=gen)
    ends = starts + torch.randint(-3, 9, (12,), generator=gen)
    mask = torch.zeros(80, dtype=torch.bool)
    for s, e in zip(starts.tolist(), ends.tolist()):
        mask[s:max(s, e)] = True
    s, e = merge_ranges(starts, ends)
    assert bool((s < e).all()) and bool((e[:-1] < s[1:]).all())  # disjoint, ascending, not touching
    got = torch.zeros(80, dtype=torch.bool)
    for a, b in zip(s.tolist(), e.tolist()):
        got[a:b] = True
    assert torch.equal(got, mask)


def test_dispatch_and_errors():
    ranges = pack_ranges([always_ranges(torch.tensor([-1, 0, 0]), sink_tokens=1, recent_window=0, seq_len=4)])
    args = (ranges.indptr, ranges.starts, ranges.ends, torch.tensor([3]), torch.tensor([4]), torch.tensor([0]))
    with pytest.raises(ValueError, match="impl"):
        assemble_always(*args, max_ranges=ranges.max_ranges, size=2, impl="cuda")
    with pytest.raises(ValueError, match="size"):
        assemble_always(*args, max_ranges=ranges.max_ranges)
    with pytest.raises(ValueError, match="seq_len"):
        always_ranges(torch.zeros(5, dtype=torch.int64), sink_tokens=0, recent_window=0, seq_len=4)
    assert assemble_always(*args, max_ranges=ranges.max_ranges, size=2).tolist() == [0, 3]  # CPU: the reference
