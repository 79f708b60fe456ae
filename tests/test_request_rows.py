"""`RequestRows`: a decode step extends a request's host copy by one slot; anything else re-reads the row."""

from __future__ import annotations

import torch

from mosaic_sglang.integration.request_rows import RequestRows


def _reader(values):
    calls = []

    def read():
        calls.append(1)
        return torch.tensor(values, dtype=torch.int64)

    return read, calls


def test_decode_steps_append_and_extend_or_invalidation_rereads():
    rows = RequestRows()
    read_row, row_reads = _reader([5, 6, -3, 7])
    read_frames, _ = _reader([-1, 0, 0, -1])
    slots, frames = rows.get("a", 2, 4, new_slot=None, read_row=read_row, read_frame_ids=read_frames)
    assert slots.tolist() == [5, 6, -3, 7] and frames.tolist() == [-1, 0, 0, -1] and rows.has_host("a")
    for step, slot in enumerate(range(100, 400)):  # past the spare capacity: the copy grows
        slots, frames = rows.get("a", 2, 5 + step, new_slot=slot, read_row=read_row, read_frame_ids=read_frames)
    assert len(row_reads) == 1 and rows.reads == 1
    assert slots.tolist() == [5, 6, -3, 7] + list(range(100, 400)) and frames[4:].eq(-1).all()
    assert slots.numel() == frames.numel() == 304

    # a step that does not follow on from the copy (another row, a skipped length, an extend) reads again
    read_row2, reads2 = _reader(list(range(1, 306)))
    read_frames2, _ = _reader([-1] * 305)
    rows.get("a", 2, 305, new_slot=None, read_row=read_row2, read_frame_ids=read_frames2)
    rows.get("a", 3, 305, new_slot=9, read_row=_reader(list(range(1, 306)))[0], read_frame_ids=read_frames2)
    assert rows.reads == 3 and not rows.has_host("a")

    # rows rewritten under live requests (offload, dedup): the next decode step reads the row again
    rows.invalidate()
    read_row3, reads3 = _reader(list(range(1, 307)))
    slots, _ = rows.get("a", 3, 306, new_slot=999, read_row=read_row3, read_frame_ids=_reader([-1] * 306)[0])
    assert len(reads3) == 1 and slots[-1].item() == 306  # the row's value, not the appended one

    rows.release("a")
    assert len(rows) == 0


def test_frame_ids_of_the_last_copy_survive_invalidation():
    rows = RequestRows()
    assert rows.frame_ids("a") is None
    rows.get("a", 1, 3, new_slot=None, read_row=_reader([4, 5, 6])[0], read_frame_ids=_reader([0, 0, -1])[0])
    rows.get("a", 1, 4, new_slot=7, read_row=_reader([4, 5, 6, 7])[0], read_frame_ids=_reader([9, 9, 9, 9])[0])
    assert rows.frame_ids("a").tolist() == [0, 0, -1, -1]  # appended, not re-read
    rows.invalidate()  # slots may be stale; frame ids are not, and the backend pads them from here
    assert rows.frame_ids("a").tolist() == [0, 0, -1, -1]


def test_counts_follow_the_copy_without_rescanning():
    """`RowCounts` (visual, frames, device, host) are kept as the copy grows: equal to a recount after every
    step, and recounted on a re-read."""
    from mosaic_sglang.serving.request_layout import RowCounts

    rows = RequestRows()
    read_row, _ = _reader([5, 6, -3, 7, 8])
    read_frames, _ = _reader([-1, 0, 0, 1, -1])
    slots, frames = rows.get("a", 1, 5, new_slot=None, read_row=read_row, read_frame_ids=read_frames)
    assert rows.counts("a") == RowCounts(visual=3, frames=2, device=4, host=1) == RowCounts.of(frames, slots)
    for step, slot in enumerate([11, 12, 13]):
        slots, frames = rows.get("a", 1, 6 + step, new_slot=slot, read_row=read_row, read_frame_ids=read_frames)
        assert rows.counts("a") == RowCounts.of(frames, slots)
    assert rows.counts("a").device == 7
    rows.invalidate()  # e.g. offload re-pointed slots to the host tier: the re-read recounts
    read_row2, _ = _reader([-1, -2, -3, -4, 8, 11, 12, 13, 14])
    read_frames2, _ = _reader([-1, 0, 0, 1, -1, -1, -1, -1, -1])
    slots, frames = rows.get("a", 1, 9, new_slot=14, read_row=read_row2, read_frame_ids=read_frames2)
    assert rows.counts("a") == RowCounts(visual=3, frames=2, device=5, host=4) == RowCounts.of(frames, slots)
