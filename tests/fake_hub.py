"""A Hugging Face hub on loopback: enough of ``/{repo}/resolve/{revision}/{file}`` for ``hf_hub_download``.

``files`` is keyed by (repository, file); a Space's or a dataset's repository is named as in its URL,
``spaces/owner/name`` or ``datasets/owner/name``, so it is a different repository from the model ``owner/name``.
Repositories not in ``files`` answer 404 ``RepoNotFound``, as the original VALL-E X repository now does; a
repository that exists without the file answers ``EntryNotFound``. A full commit id as the revision is answered
as that commit (as the hub does), any other revision as :data:`COMMIT`. Every request is logged in ``requests``.
"""
from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, files: dict[tuple[str, str], bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                hub.requests.append(f"{self.command} {self.path}")
                parts = unquote(self.path.split("?")[0]).lstrip("/").split("/")
                kind = parts[:1] if parts[0] in ("spaces", "datasets") else []  # the URL prefix of the repo type
                parts = parts[len(kind):]
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._error(404, "EntryNotFound")
                repo, revision, filename = "/".join(kind + parts[:2]), parts[3], "/".join(parts[4:])
                if not any(r == repo for r, _ in hub.files):
                    return self._error(404, "RepoNotFound")
                data = hub.files.get((repo, filename))
                if data is None:
                    return self._error(404, "EntryNotFound")
                self.send_response(200)
                self.send_header("X-Repo-Commit", revision if re.fullmatch("[0-9a-f]{40}", revision) else COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _error(self, status: int, code: str) -> None:
                message = b'{"error": "not found"}'
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(message)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(message)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
