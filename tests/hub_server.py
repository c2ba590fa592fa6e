"""A small in-memory Hub that speaks the endpoints huggingface_hub's client uses for push and pull.

Only for tests: it lets push_to_hub -> from_pretrained run through the real client with no network.
Set ``HF_ENDPOINT`` to its URL before importing huggingface_hub, with ``HF_HUB_DISABLE_XET=1``.
Every upload is answered "regular" (inline base64 in the commit), so no LFS round trip is needed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_TYPE = r"(?P<type>models|datasets|spaces)"


class HubState:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, str] = {}
        self.lock = threading.Lock()

    def commit(self, repo: str, files: dict[str, bytes], deleted: list[str]) -> str:
        with self.lock:
            store = self.repos.setdefault(repo, {})
            store.update(files)
            for path in deleted:
                store.pop(path, None)
            digest = hashlib.sha1(
                json.dumps(sorted((k, hashlib.sha1(v).hexdigest()) for k, v in store.items())).encode()
            )
            sha = digest.hexdigest()
            self.commits[repo] = sha
            return sha


class _Handler(BaseHTTPRequestHandler):
    state: HubState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    # -------------------------------------------------------------------------------- helpers
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, payload=None, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> None:
        body = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _not_found(self, code: str = "RepoNotFound") -> None:
        self._send(404, {"error": code}, headers={"X-Error-Code": code, "X-Error-Message": code})

    def _base(self) -> str:
        return f"http://{self.headers.get('Host')}"

    def _route(self, pattern: str):
        return re.fullmatch(pattern, unquote(urlparse(self.path).path))

    # -------------------------------------------------------------------------------- verbs
    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        s = self.state
        if m := self._route(r"/api/whoami-v2"):
            return self._send(
                200, {"type": "user", "name": "tester", "auth": {"accessToken": {"role": "write"}}}
            )
        if m := self._route(r"/api/repos/create"):
            data = json.loads(self._body() or b"{}")
            repo = f"{data.get('organization') or 'tester'}/{data['name']}"
            with s.lock:
                exists = repo in s.repos
                s.repos.setdefault(repo, {})
            if exists:
                return self._send(  # the Hub's own 409 body carries the repo url
                    409,
                    {"error": "You already created this model repo", "url": f"{self._base()}/{repo}"},
                    headers={"X-Error-Message": "You already created this model repo"},
                )
            return self._send(200, {"url": f"{self._base()}/{repo}", "name": repo})
        if m := self._route(r"/api/validate-yaml"):
            self._body()
            return self._send(200, {"errors": [], "warnings": []})
        if m := self._route(rf"/api/{_TYPE}/{_REPO}/preupload/(?P<rev>[^/]+)"):
            files = json.loads(self._body())["files"]
            return self._send(
                200,
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                },
            )
        if m := self._route(rf"/api/{_TYPE}/{_REPO}/commit/(?P<rev>[^/]+)"):
            return self._commit(m.group("repo"))
        if m := self._route(rf"/api/{_TYPE}/{_REPO}/paths-info/(?P<rev>[^/]+)"):
            self._body()
            return self._send(200, [])
        if m := self._route(rf"/api/{_TYPE}/{_REPO}(?:/revision/(?P<rev>[^/]+))?"):
            return self._repo_info(m.group("repo"))
        if m := self._route(rf"/api/{_TYPE}/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"):
            files = s.repos.get(m.group("repo"))
            if files is None:
                return self._not_found()
            return self._send(
                200,
                [
                    {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                    for p, b in files.items()
                ],
            )
        if m := self._route(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"):
            return self._resolve(m.group("repo"), m.group("path"))
        return self._send(404, {"error": f"no route for {self.command} {self.path}"})

    def _commit(self, repo: str) -> None:
        if repo not in self.state.repos:
            return self._not_found()
        files, deleted = {}, []
        for line in self._body().decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "file":
                value = item["value"]
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                deleted.append(item["value"]["path"])
            elif item["key"] == "lfsFile":
                return self._send(400, {"error": "this test hub accepts regular uploads only"})
        sha = self.state.commit(repo, files, deleted)
        return self._send(
            200,
            {"commitUrl": f"{self._base()}/{repo}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None},
        )

    def _repo_info(self, repo: str) -> None:
        files = self.state.repos.get(repo)
        if files is None:
            return self._not_found()
        sha = self.state.commits.get(repo, "0" * 40)
        return self._send(
            200,
            {
                "id": repo,
                "modelId": repo,
                "sha": sha,
                "private": False,
                "siblings": [{"rfilename": p, "size": len(b)} for p, b in sorted(files.items())],
                "tags": [],
            },
        )

    def _resolve(self, repo: str, path: str) -> None:
        files = self.state.repos.get(repo)
        if files is None:
            return self._not_found()
        if path not in files:
            return self._not_found("EntryNotFound")
        data = files[path]
        etag = f'"{hashlib.sha1(data).hexdigest()}"'
        headers = {"ETag": etag, "X-Repo-Commit": self.state.commits.get(repo, "0" * 40)}
        return self._send(200, raw=data, headers=headers)


class LocalHub:
    """Start with ``with LocalHub() as hub: ...``; ``hub.url`` is the endpoint, ``hub.state.repos`` the files."""

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
