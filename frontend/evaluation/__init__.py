"""Video question answering as a user measures it: the item format (`qa_items`), loaders for the
annotation files of the common long-video benchmarks (`formats`), prompts and answer parsing
(`answers`), paired statistics (`paired_stats`), a synthetic needle-in-a-video set (`needle_video`),
the runner that asks a server (`qa_runner`) and a serving load generator (`serving_load`).

Nothing here downloads anything: users bring their videos and annotation files.
"""

__all__ = ["qa_items", "formats", "answers", "paired_stats", "needle_video", "chat_stream", "qa_runner", "qa_report", "server_settings", "serving_load"]
