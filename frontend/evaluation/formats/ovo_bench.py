"""OVO-Bench (online video understanding): ``data/ovo_bench_new.json``, asked at each question's time.

A list of ``{"id", "task", "video": "<path>.mp4", "realtime": seconds, "question", "options": [texts],
"gt": <0-based index>}`` as the OVO-Bench repository's loader reads it (a dict with ``backward`` /
``realtime`` / ``forward`` lists, the shape its scripts split it into, is read too); the video is
``video`` under ``--video-root``. ``realtime`` is the question's time: the harness streams the video up
to there through a streaming session and asks then (`QAItem.timestamp`). Backward-tracing (``EPM``,
``ASI``, ``HLD``) and real-time perception (``STU``, ``OJR``, ``ATR``, ``ACR``, ``OCR``, ``FPD``) tasks
are multiple-choice and loaded; the forward active-responding tasks (``REC``, ``SSR``, ``CRR``: records
with ``test_info`` and no options) ask for counts or yes/no at many times and are skipped. The category
is ``task``. OVO-Bench's own score counts a reply right when the correct letter occurs anywhere in it;
this harness reads the first letter (`answers.extract_letter`), which is stricter.
"""

from __future__ import annotations

from pathlib import Path

from .common import LoadedSet, field_of, make_item, question_rows, read_records, video_path

__all__ = ["load"]


def load(path, video_root=None) -> LoadedSet:
    path = Path(path)
    records = read_records(path)
    if isinstance(records, dict):
        records = [r for part in ("backward", "realtime", "forward") for r in records.get(part, [])]
    out = LoadedSet()
    for where, row in question_rows(path, records):
        if "test_info" in row or not row.get("options"):
            out.skip(f"forward active responding ({row.get('task', '?')})")
            continue
        out.items.append(make_item(
            qid=field_of(row, ("id",), where), video=video_path(field_of(row, ("video",), where), video_root, path),
            question=row.get("question"), options=row.get("options"), answer=field_of(row, ("gt",), where, kind=int),
            where=where, source="ovo_bench", category=row.get("task"),
            timestamp=field_of(row, ("realtime",), where, kind=float),
        ))
    return out.finish(path, "ovo_bench")
