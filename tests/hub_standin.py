"""A stand-in for the Hugging Face Hub on 127.0.0.1: enough of its HTTP API for huggingface_hub's downloads.

Tests serve small random checkpoints under real repository ids (``facebook/deit-tiny-patch16-224``
...) so the app's whole Hub path runs with no network. Every request is logged in ``requests``;
``gated`` repositories answer 401 with the Hub's gated-repo error code; ``listed_sizes`` makes the file
listing state other sizes than the files have (a "600 MB" model that downloads in a blink).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


class StandInHub:
    """Serves ``repos`` ({repo id: {file name: bytes}}) the way huggingface.co does, from a thread."""

    def __init__(self, repos: dict[str, dict[str, bytes]], *, gated: tuple[str, ...] = (), delay_s: float = 0.0,
                 listed_sizes: dict[str, dict[str, int]] | None = None):
        import time

        hub = self
        self.repos = repos
        self.gated = set(gated)
        #: sizes the file listing states instead of the real ones ({repo: {file: bytes}}), to stand for big files
        self.listed_sizes = listed_sizes or {}
        self.requests: list[str] = []
        self._lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer()

            def do_GET(self):
                self.answer()

            def send(self, status, data=b"", headers=()):
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "GET":
                    for start in range(0, len(data), 4096):
                        self.wfile.write(data[start : start + 4096])

            def answer(self):
                with hub._lock:
                    hub.requests.append(f"{self.command} {self.path}")
                if delay_s:
                    time.sleep(delay_s)
                path = self.path.split("?")[0]
                api = path.startswith("/api/models/")
                rest = path[len("/api/models/"):] if api else path.lstrip("/")
                repo_id = next((r for r in hub.repos if rest == r or rest.startswith(r + "/")), None)
                if repo_id is None:
                    return self.send(404, b'{"error": "Repository not found"}',
                                     [("X-Error-Code", "RepoNotFound"), ("Content-Type", "application/json")])
                if repo_id in hub.gated:
                    return self.send(401, b'{"error": "Access to this model is restricted"}',
                                     [("X-Error-Code", "GatedRepo"), ("Content-Type", "application/json")])
                files = hub.repos[repo_id]
                if api:
                    listed = hub.listed_sizes.get(repo_id, {})
                    siblings = [{"rfilename": name, "size": listed.get(name, len(data))} for name, data in files.items()]
                    info = json.dumps({"id": repo_id, "sha": COMMIT, "siblings": siblings}).encode()
                    return self.send(200, info, [("Content-Type", "application/json")])
                prefix = f"{repo_id}/resolve/"
                name = rest[len(prefix):].split("/", 1)[-1] if rest.startswith(prefix) else None
                if name not in files:
                    return self.send(404, b"", [("X-Error-Code", "EntryNotFound")])
                data = files[name]
                etag = '"' + hashlib.sha256(data).hexdigest() + '"'
                self.send(200, data, [("X-Repo-Commit", COMMIT), ("ETag", etag)])

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"

    def weight_requests(self, repo_id: str) -> list[str]:
        """GET requests for a weight file of ``repo_id``."""
        return [r for r in self.requests if r.startswith(f"GET /{repo_id}/resolve/")
                and ("model.safetensors" in r or "pytorch_model.bin" in r)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file of a checkpoint folder, as the stand-in serves them."""
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def point_at(monkeypatch: pytest.MonkeyPatch, hub: StandInHub, cache_dir: Path) -> None:
    """Send huggingface_hub (and the app) to ``hub``, with its own empty cache, online."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
