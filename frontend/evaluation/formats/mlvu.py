"""MLVU (the dev set's multiple-choice tasks): ``MLVU/json/<n>_<task>.json``, one file per task, or the
``json`` folder itself (every ``*.json`` in it is read).

Each file is a list of ``{"video": "<file>.mp4", "duration": seconds, "question": …, "candidates":
[texts], "answer": "<the correct candidate's text>", "question_type": "<task>"}`` as the MLVU repository
documents. The video is looked up under ``--video-root`` (the dataset's ``video`` folder) in the task's
sub-folder named like the JSON file (``video/1_plotQA/<file>.mp4``), then directly under the root. The
open-ended tasks (``subPlot``, ``summary``: records without ``candidates``) are skipped. The category is
``question_type``.
"""

from __future__ import annotations

from pathlib import Path

from .common import LoadedSet, field_of, make_item, question_rows, read_records, video_path

__all__ = ["load"]


def load(path, video_root=None) -> LoadedSet:
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    out = LoadedSet()
    for file in files:
        for number, (where, row) in enumerate(question_rows(file, read_records(file))):
            if not row.get("candidates"):
                out.skip("open-ended (no candidates)")
                continue
            video = field_of(row, ("video",), where)
            out.items.append(make_item(
                qid=f"{file.stem}/{number}", video=video_path(video, video_root, file, subfolders=(file.stem,)),
                question=row.get("question"), options=row.get("candidates"), answer=row.get("answer"),
                where=where, source="mlvu", category=row.get("question_type", file.stem),
                duration=field_of(row, ("duration",), where, kind=float, required=False),
            ))
    return out.finish(path, "mlvu")
