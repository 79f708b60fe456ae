"""LongVideoBench: ``lvb_val.json`` (or ``lvb_test_wo_gt.json``, which has no answers and loads nothing).

A list of ``{"id", "video_id", "video_path": "<file>.mp4", "question", "candidates": [texts],
"correct_choice": <0-based index>, "duration": seconds, "duration_group": 15 | 60 | 600 | 3600,
"question_category", "topic_category", …}`` as the LongVideoBench repository documents; the video is
``video_path`` under ``--video-root`` (the dataset's ``videos`` folder). The question asked is
``question`` (the referring-query form the benchmark scores). The category is the duration group
(``"600s"``), the split LongVideoBench reports. Records without ``correct_choice`` are skipped.
"""

from __future__ import annotations

from pathlib import Path

from .common import LoadedSet, field_of, make_item, question_rows, read_records, video_path

__all__ = ["load"]


def load(path, video_root=None) -> LoadedSet:
    path = Path(path)
    out = LoadedSet()
    for where, row in question_rows(path, read_records(path)):
        if row.get("correct_choice") is None:
            out.skip("no correct_choice (test split)")
            continue
        group = row.get("duration_group")
        out.items.append(make_item(
            qid=field_of(row, ("id",), where), video=video_path(field_of(row, ("video_path",), where), video_root, path),
            question=row.get("question"), options=row.get("candidates"),
            answer=field_of(row, ("correct_choice",), where, kind=int), where=where, source="longvideobench",
            category=None if group is None else f"{group}s",
            duration=field_of(row, ("duration",), where, kind=float, required=False),
        ))
    return out.finish(path, "longvideobench")
