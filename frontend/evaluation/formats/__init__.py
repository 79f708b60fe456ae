"""Loaders for the annotation files of the common long-video benchmarks, one module per benchmark.

``load_questions(fmt, path, video_root=None)`` reads ``path`` in format ``fmt`` and returns its
`QAItem` list: ``jsonl`` (the project's own format, `qa_items`), ``videomme``, ``mlvu``,
``longvideobench``, ``egoschema`` (multiple-choice over the whole video), ``ovo_bench`` and
``streaming_bench`` (questions with a time, asked through streaming sessions). Each module's docstring
says which file of the benchmark it reads, the fields it relies on and what it skips. Nothing is
downloaded: users bring the files and videos; ``video_root`` is the folder the videos are in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..qa_items import QAItem, load_jsonl
from . import egoschema, longvideobench, mlvu, ovo_bench, streaming_bench, videomme
from .common import LoadedSet

__all__ = ["FORMATS", "load_questions", "load_set", "common", "videomme", "mlvu", "longvideobench", "egoschema",
           "ovo_bench", "streaming_bench"]

FORMATS: Dict[str, Callable[..., LoadedSet]] = {
    "videomme": videomme.load,
    "mlvu": mlvu.load,
    "longvideobench": longvideobench.load,
    "egoschema": egoschema.load,
    "ovo_bench": ovo_bench.load,
    "streaming_bench": streaming_bench.load,
}
"""Benchmark name → loader ``(path, video_root=None) -> LoadedSet``."""


def load_set(fmt: str, path, video_root: Optional[str] = None) -> LoadedSet:
    """Items and skip counts of ``path`` read as ``fmt``."""
    if fmt == "jsonl":
        if video_root is not None:
            raise ValueError("video_root: expected None for the jsonl format (its relative paths resolve against "
                             f"the file's folder), got {video_root!r}")
        return LoadedSet(items=load_jsonl(path))
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {['jsonl', *FORMATS]}, got {fmt!r}")
    return FORMATS[fmt](Path(path), video_root=video_root)


def load_questions(fmt: str, path, video_root: Optional[str] = None) -> List[QAItem]:
    """The questions of ``path`` read as ``fmt`` (see the module docstring)."""
    return load_set(fmt, path, video_root).items
