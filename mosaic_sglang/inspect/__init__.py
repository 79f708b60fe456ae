"""``python -m mosaic_sglang.inspect DUMP_DIR``: why an answer came out, as a picture.

Reads the dump a server writes with ``MOSAIC_DUMP_DIR`` set (`serving.selection_dump`): `timeline`
replays it (the video's frames, its cluster index rebuilt append by append, each question's attended set
per layer, which tokens went to the host tier) and `figure` draws that with matplotlib into one PNG.
"""

from .figure import render
from .timeline import Question, VideoTimeline, load_records, read_timeline

__all__ = ["render", "read_timeline", "load_records", "VideoTimeline", "Question"]
