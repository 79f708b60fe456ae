"""A media server on 127.0.0.1 that counts its hits: the only network peer the media-guard tests use."""

from __future__ import annotations

import collections
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class LoopbackMediaServer:
    """Serves the files of ``root`` at ``http://127.0.0.1:<port>/<name>``; ``hits[path]`` counts requests
    (every request counts, served or not)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.hits: collections.Counter = collections.Counter()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                owner.hits[self.path] += 1
                path = owner.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def total_hits(self) -> int:
        return sum(self.hits.values())

    def __enter__(self) -> "LoopbackMediaServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
