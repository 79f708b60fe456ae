"""StreamingBench (real-time visual understanding): the questions JSON its evaluation scripts read.

A list of videos ``{"video_path": "<file>.mp4", "questions": [{"question_id"?, "task_type", "question",
"time_stamp": "HH:MM:SS", "options": ["A. …", …], "answer": "A"}, …]}`` as StreamingBench's
``src/eval.py`` consumes it (five questions per video, each at its time); flat rows carrying
``video_path`` (or ``video``) next to the question fields are read too. The video is ``video_path``
under ``--video-root``; ``time_stamp`` is when the question is asked (the harness streams up to there).
Options may come with or without ``"A. "`` prefixes (the official script adds them when missing).
Questions without options (the open-ended proactive-output tasks) are skipped. The category is
``task_type``.
"""

from __future__ import annotations

from pathlib import Path

from .common import LoadedSet, field_of, make_item, question_rows, read_records, seconds_of, video_path

__all__ = ["load"]


def _rows(records):
    for number, video in enumerate(records):
        if isinstance(video, dict) and isinstance(video.get("questions"), list):
            shared = {k: v for k, v in video.items() if k != "questions"}
            for index, question in enumerate(video["questions"]):
                yield f"video {number} question {index}", {**shared, **question} if isinstance(question, dict) else question
        else:
            yield f"row {number}", video


def load(path, video_root=None) -> LoadedSet:
    path = Path(path)
    records = read_records(path)
    out = LoadedSet()
    for where, row in question_rows(path, records, what="videos", places=_rows(records)):
        if not row.get("options"):
            out.skip("open-ended (no options)")
            continue
        video = field_of(row, ("video_path", "video"), where)
        out.items.append(make_item(
            qid=field_of(row, ("question_id", "id"), where, required=False) or f"{Path(video).stem}@{row.get('time_stamp')}",
            video=video_path(video, video_root, path), question=row.get("question"), options=row.get("options"),
            answer=row.get("answer"), where=where, source="streaming_bench", category=row.get("task_type"),
            timestamp=seconds_of(row.get("time_stamp"), where, "time_stamp"),
        ))
    return out.finish(path, "streaming_bench")
