"""Frontend (installed as ``mosaic_sglang.frontend``): the client side of a Mosaic-enabled SGLang server.

`video` writes and probes video files with PyAV (synthetic clips for tests and the demo),
`video_clip` samples a file the way a user asks (fps, max_frames, start/end, a resolution cap) and
encodes exactly those frames at the sampled rate, `clip_cache.ClipCache` keeps sampled clips so a
follow-up question decodes nothing, `program_video` gives ``sgl.function`` programs a real video
(`program_video.video`, sent as ``video_data`` by `program_video.VideoRuntimeEndpoint` over HTTP or by
`engine_backend.EngineBackend` on an in-process ``sgl.Engine``),
`programs` has ready programs (one question, a chat, a batch, a tool-using agent that reports scene
changes found by `scene_cuts`), `video_stream.VideoStream` feeds a live stream into an SGLang streaming
session, `video_chat.VideoConversation` runs a multi-turn video conversation over SGLang's HTTP API and reads
each turn's Mosaic statistics, and `server.SGLangServer` starts and stops a ``sglang.launch_server``
subprocess (used by the demo and the HTTP tests); `evaluation` measures accuracy and serving the way a
user would (the harnesses behind ``benchmarks/video_qa_accuracy.py`` and ``benchmarks/video_serving.py``).
"""

__all__ = ["video", "video_clip", "clip_cache", "program_video", "engine_backend", "programs", "scene_cuts", "video_stream", "video_chat", "server", "evaluation"]
