"""EgoSchema: ``questions.json`` with the answers of its public subset, ``subset_answers.json``.

``questions.json`` is a list of ``{"q_uid", "google_drive_id", "question", "option 0", …, "option 4"}``
and ``subset_answers.json`` maps ``q_uid`` to the correct option's 0-based index, as the EgoSchema
repository distributes them; the video is ``<q_uid>.mp4`` under ``--video-root``. The answers file is
looked for next to the questions (``path`` may also be the folder holding both). Questions without a
public answer (the 4 500 of the hidden test set) are skipped.
"""

from __future__ import annotations

from pathlib import Path

from ..qa_items import QAFormatError
from .common import LoadedSet, field_of, make_item, question_rows, read_records, video_path

__all__ = ["load", "ANSWERS_FILE"]

ANSWERS_FILE = "subset_answers.json"


def load(path, video_root=None, answers=None) -> LoadedSet:
    path = Path(path)
    if path.is_dir():
        path = path / "questions.json"
    answers_path = Path(answers) if answers else path.parent / ANSWERS_FILE
    if not answers_path.is_file():
        raise QAFormatError(f"{answers_path}: expected EgoSchema's answers file next to {path.name}, got no such file")
    key = read_records(answers_path)
    if not isinstance(key, dict):
        raise QAFormatError(f"{answers_path}: expected an object q_uid -> index, got {type(key).__name__}")
    out = LoadedSet()
    for where, row in question_rows(path, read_records(path)):
        uid = field_of(row, ("q_uid",), where)
        if uid not in key:
            out.skip("no public answer")
            continue
        options = [row.get(f"option {i}") for i in range(5) if f"option {i}" in row]
        out.items.append(make_item(qid=uid, video=video_path(f"{uid}.mp4", video_root, path), question=row.get("question"),
                                   options=options, answer=key[uid], where=where, source="egoschema"))
    return out.finish(path, "egoschema")
