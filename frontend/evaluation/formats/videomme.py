"""Video-MME (lmms-lab/Video-MME): ``videomme/test-00000-of-00001.parquet``, or the same rows as JSON/JSONL.

One row per question, as the dataset card documents: ``video_id`` (``"001"``), ``duration``
(``"short"`` / ``"medium"`` / ``"long"``), ``domain``, ``sub_category``, ``url``, ``videoID`` (the
YouTube id: the file is ``<videoID>.mp4`` under ``--video-root``, the dataset's ``data/`` folder),
``question_id`` (``"001-1"``), ``task_type``, ``question``, ``options`` (four strings ``"A. …"``) and
``answer`` (a letter). The category reported is the duration class, Video-MME's headline split.
The nested JSON of the original release (one object per video with a ``questions`` list holding
``question_id``, ``task_type``, ``question``, ``options``, ``answer``) is read too.
"""

from __future__ import annotations

from pathlib import Path

from .common import LoadedSet, field_of, make_item, question_rows, read_records, video_path

__all__ = ["load"]


def _rows(records):
    number = 0
    for video in records:
        if isinstance(video, dict) and isinstance(video.get("questions"), list):
            shared = {k: v for k, v in video.items() if k != "questions"}
            questions = [{**shared, **q} if isinstance(q, dict) else q for q in video["questions"]]
        else:
            questions = [video]
        for question in questions:
            yield f"question {number}", question
            number += 1


def load(path, video_root=None) -> LoadedSet:
    path = Path(path)
    records = read_records(path)
    if not isinstance(records, list):
        records = [records]
    out = LoadedSet()
    for number, (where, row) in enumerate(question_rows(path, records, places=_rows(records))):
        vid = field_of(row, ("videoID", "video_id"), where)
        where = f"{path}: question {row.get('question_id', number)!r}"
        out.items.append(make_item(
            qid=field_of(row, ("question_id",), where, required=False) or f"{vid}-{number}",
            video=video_path(vid if Path(vid).suffix else f"{vid}.mp4", video_root, path),
            question=row.get("question"), options=row.get("options"), answer=row.get("answer"), where=where,
            source="videomme", category=row.get("duration"),
        ))
    return out.finish(path, "videomme")
