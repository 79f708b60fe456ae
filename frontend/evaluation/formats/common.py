"""What every annotation loader shares: reading the file, finding the video, building a checked `QAItem`.

A loader reads the benchmark's own file as its authors distribute it (JSON, JSONL or Parquet), turns each
question into a `QAItem` and raises `QAFormatError` naming the file, the record and the field when a
record does not have what the format documents. Records the harness cannot score (no answer in that
split, open-ended tasks) are skipped and counted: `LoadedSet.skipped` says how many and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from ..qa_items import QAFormatError, QAItem, answer_letter, strip_letter

__all__ = ["LoadedSet", "read_records", "question_rows", "video_path", "make_item", "field_of", "seconds_of"]

PathLike = Union[str, Path]


@dataclass
class LoadedSet:
    """Items of one annotation file, and the records left out (reason → count)."""

    items: List[QAItem] = field(default_factory=list)
    skipped: Dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def finish(self, path: PathLike, fmt: str) -> "LoadedSet":
        if not self.items:
            why = f" (skipped: {self.skipped})" if self.skipped else ""
            raise QAFormatError(f"{path}: expected at least one {fmt} question with an answer, got none{why}")
        seen = set()
        for item in self.items:
            if item.qid in seen:
                raise QAFormatError(f"{path}: id: expected unique question ids, got {item.qid!r} twice")
            seen.add(item.qid)
        return self


def read_records(path: PathLike) -> Union[list, dict]:
    """The file's content: ``.json`` → its value; ``.jsonl`` → a list of objects; ``.parquet`` → a list of
    row dicts (needs ``pandas`` with ``pyarrow``, which SGLang's benchmark extras bring)."""
    path = Path(path)
    if not path.is_file():
        raise QAFormatError(f"{path}: expected an annotation file, got no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise QAFormatError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None


def question_rows(path: PathLike, records, *, what: str = "questions",
                  places: Optional[Iterable[Tuple[str, object]]] = None) -> Iterator[Tuple[str, dict]]:
    """``(where, row)`` for each question of a list-shaped annotation, each row checked to be an object.

    ``places``: ``(place, row)`` pairs when the rows are not the list itself (questions nested in
    videos); default ``("question <n>", records[n])``. ``where`` is ``"<path>: <place>"``.
    """
    if not isinstance(records, list):
        raise QAFormatError(f"{path}: expected a list of {what}, got {type(records).__name__}")
    for place, row in places if places is not None else ((f"question {n}", r) for n, r in enumerate(records)):
        where = f"{path}: {place}"
        if not isinstance(row, dict):
            raise QAFormatError(f"{where}: expected an object, got {type(row).__name__}")
        yield where, row


def _plain(value):
    """Parquet cells → JSON-like values (numpy arrays of strings → lists)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def field_of(record: dict, names: Sequence[str], where: str, *, kind=str, required: bool = True):
    """The first of ``names`` present in ``record``, checked to be a ``kind``."""
    for name in names:
        if name in record and record[name] is not None:
            value = record[name]
            if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if kind is int and isinstance(value, int) and not isinstance(value, bool):
                return value
            if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            if isinstance(value, kind) and (kind is not str or value.strip()):
                return value
            raise QAFormatError(f"{where}: {name}: expected {kind.__name__}, got {value!r}")
    if required:
        raise QAFormatError(f"{where}: {'/'.join(names)}: expected a value, got none")
    return None


def seconds_of(value, where: str, name: str) -> float:
    """A time as seconds: a number, or ``"HH:MM:SS"`` / ``"MM:SS"`` (fractions allowed in the last part)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        parts = value.strip().split(":")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        if 1 <= len(numbers) <= 3 and all(n >= 0 for n in numbers):
            return sum(n * 60 ** i for i, n in enumerate(reversed(numbers)))
    raise QAFormatError(f"{where}: {name}: expected seconds or 'HH:MM:SS', got {value!r}")


def video_path(name: str, video_root: Optional[PathLike], annotation: Path, *, subfolders: Iterable[str] = ()) -> str:
    """Where the video ``name`` is: an absolute path or URL as given; otherwise under ``video_root``
    (default: the annotation's folder), trying each of ``subfolders`` first when the file exists there."""
    if "://" in name or name.startswith("data:") or Path(name).is_absolute():
        return name
    root = Path(video_root) if video_root is not None else annotation.parent
    for sub in subfolders:
        candidate = root / sub / name
        if candidate.exists():
            return str(candidate)
    return str(root / name)


def make_item(*, qid, video: str, question, options, answer, where: str, source: str,
              timestamp: Optional[float] = None, category=None, duration: Optional[float] = None) -> QAItem:
    """A checked `QAItem` (options may carry ``"A. "`` prefixes; ``answer`` a letter, index or option text)."""
    if not isinstance(question, str) or not question.strip():
        raise QAFormatError(f"{where}: question: expected a non-empty string, got {question!r}")
    if not isinstance(options, (list, tuple)) or len(options) < 2 or not all(
            isinstance(o, str) and o.strip() for o in options):
        raise QAFormatError(f"{where}: options: expected a list of >= 2 non-empty strings, got {options!r}")
    return QAItem(qid=str(qid), video=video, question=question.strip(), options=tuple(strip_letter(o) for o in options),
                  answer=answer_letter(answer, list(options), where=where), timestamp=timestamp,
                  category=None if category is None else str(category), duration=duration, source=source)
