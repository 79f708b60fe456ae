"""Frontend (installed as ``mosaic_sglang.frontend``): the client side of a Mosaic-enabled SGLang server.

`video` writes and probes video files with PyAV (synthetic clips for tests and the demo),
`video_chat.VideoConversation` runs a multi-turn video conversation over SGLang's HTTP API and reads
each turn's Mosaic statistics, and `server.SGLangServer` starts and stops a ``sglang.launch_server``
subprocess (used by the demo and the HTTP tests).
"""

__all__ = ["video", "video_chat", "server"]
