"""A video question through SGLang's OpenAI-compatible API, with the video given three ways.

``/v1/chat/completions`` takes ``{"type": "video_url", "video_url": {"url": ...}}`` content parts. This
script sends the same question with the video as (1) a local path on the server's machine (the server
must allow its folder: ``--mosaic-config '{"allowed_media_dirs": [...]}'``), (2) an ``http://`` URL
served by a tiny ``http.server`` thread on 127.0.0.1 (the server must list the host:
``--allowed-media-domains 127.0.0.1``) and (3) a base64 ``data:video/mp4`` URL, and prints each answer
with Mosaic's per-request stats (the response's ``metadata["mosaic"]``). It uses the ``openai`` client
when installed, else ``requests``. Without ``--url`` it starts its own server (`SGLangServer`, the
embedded tiny model on the CPU by default: random weights, so the answers are noise) with both
permissions; with ``--url`` the server's operator must have granted them.

    python examples/openai_video_url.py
    python examples/openai_video_url.py --url http://127.0.0.1:30000 --video /data/clips/match.mp4
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mosaic_sglang.frontend.server import SGLangServer, cpu_server_args
from mosaic_sglang.frontend.video import make_synthetic_video


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no access log on the console
        pass


@contextlib.contextmanager
def serve_folder(folder: Path):
    """``http://127.0.0.1:<port>`` serving ``folder`` from a daemon thread, for the duration."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def ask(base_url: str, video_url: str, question: str, max_tokens: int):
    """``(answer text, metadata["mosaic"] or None)`` of one chat completion with a ``video_url`` part."""
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": video_url}},
                                             {"type": "text", "text": question}]}]
    try:
        import openai
    except ImportError:
        openai = None
    if openai is not None:
        client = openai.OpenAI(base_url=base_url + "/v1", api_key="EMPTY")
        response = client.chat.completions.create(model="default", messages=messages, max_tokens=max_tokens,
                                                  temperature=0).model_dump()
    else:
        import requests

        reply = requests.post(base_url + "/v1/chat/completions", timeout=600, json={
            "model": "default", "messages": messages, "max_tokens": max_tokens, "temperature": 0})
        if reply.status_code != 200:
            raise RuntimeError(f"/v1/chat/completions: HTTP {reply.status_code}: {reply.text[:300]}")
        response = reply.json()
    return response["choices"][0]["message"]["content"], (response.get("metadata") or {}).get("mosaic")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="a running Mosaic server (default: start one here)")
    parser.add_argument("--model-path", default=None,
                        help="model for the server started here (default: the embedded tiny Qwen2.5-VL)")
    parser.add_argument("--device", default="cpu", help="device of the server started here (cpu, cuda)")
    parser.add_argument("--video", default=None, help="video file (default: a synthetic 6 s mp4)")
    parser.add_argument("--question", default="What happens in this video?")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--log", default=None, help="log file of the server started here")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="mosaic-openai-"))
    video = (Path(args.video) if args.video else make_synthetic_video(
        workdir / "clip.mp4", num_frames=24, fps=4, size=64, num_scenes=2)).resolve()
    with contextlib.ExitStack() as stack:
        media_url = stack.enter_context(serve_folder(video.parent))
        url = args.url
        if url is None:
            model = args.model_path
            if model is None:
                from mosaic_sglang.testing.tiny_models import build_tiny_model

                model = str(build_tiny_model("qwen2_5_vl"))
            server_args = ["--enable-mosaic", "--mosaic-budget", "64",
                           "--mosaic-config", json.dumps({"allowed_media_dirs": [str(video.parent)]}),
                           "--allowed-media-domains", "127.0.0.1"]
            server_args += cpu_server_args() if args.device == "cpu" else ["--device", args.device]
            print("starting a server (a minute or two on a CPU) ...", flush=True)
            url = stack.enter_context(SGLangServer(model, server_args, log_path=args.log or workdir / "server.log")).url
        data_url = "data:video/mp4;base64," + base64.b64encode(video.read_bytes()).decode("ascii")
        for how, video_url in [("local path", str(video)), ("loopback http URL", f"{media_url}/{video.name}"),
                               ("base64 data URL", data_url)]:
            text, mosaic = ask(url, video_url, args.question, args.max_tokens)
            stats = (mosaic or [{}])[0]
            shown = video_url if len(video_url) < 80 else video_url[:60] + "..."
            print(f"[{how}] {shown}\n  answer: {text!r}\n  mosaic: frames {stats.get('frames')}, visual "
                  f"{stats.get('visual_tokens')}, attended {stats.get('attended_tokens')} "
                  f"of {stats.get('context_tokens')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
