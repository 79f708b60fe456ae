"""`QAItem`: one multiple-choice question about one video, and the project's JSONL format for sets of them.

The JSONL format (one JSON object per line; blank lines and lines starting with ``#`` are skipped):

=============  ========================  ===============================================================
field          type                      meaning
=============  ========================  ===============================================================
``id``         string (required)         unique within the file
``video``      string (required)         a path (relative paths resolve against the file's folder) or an
                                         ``http(s)://`` / ``data:`` URL, passed to the server as given
``question``   string (required)         the question text, without the options
``options``    list of >= 2 strings      option texts, in letter order (a leading ``"A. "`` is removed)
``answer``     string or integer         the correct option: a letter (``"B"``), a 0-based index, or
                                         the option's text
``timestamp``  number >= 0 (optional)    seconds into the video at which the question is asked (streaming
                                         sets: the model may only see the video up to here)
``category``   string (optional)         task type, reported per category
``duration``   number >= 0 (optional)    the video's length in seconds (reported, not checked)
=============  ========================  ===============================================================

A malformed line raises `QAFormatError` naming the file, line, field, what was expected and what was given.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

__all__ = ["QAItem", "QAFormatError", "LETTERS", "load_jsonl", "write_jsonl", "strip_letter", "answer_letter"]

LETTERS = string.ascii_uppercase
"""Option letters, in order (A is option 0)."""

_PREFIX = re.compile(r"^\s*\(?([A-Z])[\.\):]\s+")


class QAFormatError(ValueError):
    """An annotation that does not follow its format; the message names where and what."""


@dataclass(frozen=True)
class QAItem:
    """One question.

    Attributes:
        qid: unique id within its set.
        video: path or URL of the video, as the server will be given it.
        question: question text (no options).
        options: option texts in letter order (no letter prefixes).
        answer: the correct option's letter (``"A"`` … ).
        timestamp: seconds into the video at which it is asked (streaming sets), or None (whole video).
        category: task type, or None.
        duration: the video's length in seconds, if the annotation says.
        source: the format it was loaded from (``"jsonl"``, ``"videomme"``, …).
    """

    qid: str
    video: str
    question: str
    options: tuple
    answer: str
    timestamp: Optional[float] = None
    category: Optional[str] = None
    duration: Optional[float] = None
    source: str = "jsonl"

    def __post_init__(self) -> None:
        where = f"item {self.qid!r}"
        if not isinstance(self.options, tuple) or len(self.options) < 2 or len(self.options) > len(LETTERS):
            raise QAFormatError(f"{where}: options: expected 2..{len(LETTERS)} strings, got {self.options!r}")
        if self.answer not in LETTERS[: len(self.options)]:
            raise QAFormatError(
                f"{where}: answer: expected a letter in A..{LETTERS[len(self.options) - 1]}, got {self.answer!r}")

    @property
    def answer_index(self) -> int:
        return LETTERS.index(self.answer)

    def to_json(self) -> dict:
        out = {"id": self.qid, **{k: v for k, v in asdict(self).items() if k not in ("qid", "source")}}
        out["options"] = list(self.options)
        return {k: v for k, v in out.items() if v is not None}


def strip_letter(option: str) -> str:
    """``"B. a red ball"`` / ``"(B) a red ball"`` → ``"a red ball"``; other text unchanged (but stripped)."""
    return _PREFIX.sub("", option, count=1).strip()


def answer_letter(answer, options: Sequence[str], *, where: str) -> str:
    """The letter of ``answer`` given as a letter, a 0-based index or an option's text (see the format)."""
    n = len(options)
    if isinstance(answer, bool):
        raise QAFormatError(f"{where}: answer: expected a letter, a 0-based index or an option text, got {answer!r}")
    if isinstance(answer, int):
        if 0 <= answer < n:
            return LETTERS[answer]
        raise QAFormatError(f"{where}: answer: expected an index in 0..{n - 1}, got {answer}")
    if isinstance(answer, str):
        text = answer.strip()
        if len(text) == 1 and text.upper() in LETTERS[:n]:
            return text.upper()
        stripped = [strip_letter(o) for o in options]
        for candidate in (text, strip_letter(text)):
            if candidate in stripped:
                return LETTERS[stripped.index(candidate)]
        raise QAFormatError(f"{where}: answer: expected a letter in A..{LETTERS[n - 1]}, an index or one of the "
                            f"options, got {answer!r}")
    raise QAFormatError(f"{where}: answer: expected a letter, a 0-based index or an option text, got {answer!r}")


def _number(record: dict, name: str, where: str) -> Optional[float]:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise QAFormatError(f"{where}: {name}: expected a number >= 0, got {value!r}")
    return float(value)


def _string(record: dict, name: str, where: str, *, required: bool) -> Optional[str]:
    value = record.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise QAFormatError(f"{where}: {name}: expected a non-empty string, got {value!r}")
    return value


def _resolve(video: str, folder: Path) -> str:
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", video) or video.startswith("data:"):
        return video
    path = Path(video).expanduser()
    return str(path if path.is_absolute() else folder / path)


def item_from_record(record, *, where: str, folder: Path = Path("."), source: str = "jsonl") -> QAItem:
    """One JSONL record (a dict) → `QAItem` (see the module docstring for the fields)."""
    if not isinstance(record, dict):
        raise QAFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    qid = record.get("id")
    if isinstance(qid, int) and not isinstance(qid, bool):
        qid = str(qid)
    if not isinstance(qid, str) or not qid:
        raise QAFormatError(f"{where}: id: expected a non-empty string, got {qid!r}")
    options = record.get("options")
    if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) and o.strip() for o in options):
        raise QAFormatError(f"{where}: options: expected a list of >= 2 non-empty strings, got {options!r}")
    return QAItem(
        qid=qid,
        video=_resolve(_string(record, "video", where, required=True), folder),
        question=_string(record, "question", where, required=True).strip(),
        options=tuple(strip_letter(o) for o in options),
        answer=answer_letter(record.get("answer"), options, where=where),
        timestamp=_number(record, "timestamp", where),
        category=_string(record, "category", where, required=False),
        duration=_number(record, "duration", where),
        source=source,
    )


def load_jsonl(path: Union[str, Path]) -> List[QAItem]:
    """Read a set in the project's JSONL format; ids must be unique."""
    path = Path(path)
    items, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise QAFormatError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
        item = item_from_record(record, where=where, folder=path.parent)
        if item.qid in seen:
            raise QAFormatError(f"{where}: id: expected a unique id, got {item.qid!r} again")
        seen.add(item.qid)
        items.append(item)
    if not items:
        raise QAFormatError(f"{path}: expected at least one question, got none")
    return items


def write_jsonl(items: Iterable[QAItem], path: Union[str, Path]) -> Path:
    """Write ``items`` in the project's JSONL format (round-trips through `load_jsonl`)."""
    path = Path(path)
    path.write_text("".join(json.dumps(item.to_json()) + "\n" for item in items), encoding="utf-8")
    return path
