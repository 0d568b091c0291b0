"""A Hub-compatible HTTP server on 127.0.0.1 for tests (stdlib only, in memory).

It answers the routes the real `huggingface_hub` client uses to push and pull a model repository:
create repo, create branch, validate-yaml, preupload, commit (NDJSON), model info, tree, paths-info and
HEAD/GET `resolve` with `X-Repo-Commit` and `ETag`. Point the client at it with `HF_ENDPOINT`.
Spaces (`repo_type="space"`) answer the same routes under `/api/spaces/` and `/spaces/`; creating one needs
an `sdk`, as on the Hub. `hub.repos` holds a model as "ORG/NAME", a Space as "spaces/ORG/NAME".

Fault injection for failure tests: `fail_next(route, status)` answers the next matching request with an
error, `drop_next(route)` closes the connection after reading half of the request body, and
`require_token` answers 401 to requests without an `Authorization` header, as the Hub does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

UNAUTHORIZED = "Invalid username or password."


def git_blob_oid(content: bytes) -> str:
    """The git blob sha1 of `content`: what the Hub reports as a regular file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool
    sdk: str | None = None  # a Space's SDK ("gradio", ...); None for a model
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """The commit a branch name or a (full or 7+ character) commit oid points to."""
        revision = unquote(revision)
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        matches = [c for oid, c in self.commits.items() if len(revision) >= 7 and oid.startswith(revision)]
        return matches[0] if len(matches) == 1 else None


class HubState:
    """The server's repositories, and the faults to inject into the next requests."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.require_token = False
        self.faults: list[tuple[str, str, int]] = []  # (kind, route substring, status)
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def fail_next(self, route: str, status: int = 500) -> None:
        """Answer the next request whose path contains `route` with `status`."""
        self.faults.append(("fail", route, status))

    def drop_next(self, route: str) -> None:
        """Close the connection of the next request whose path contains `route` mid-body."""
        self.faults.append(("drop", route, 0))

    def take_fault(self, path: str) -> tuple[str, int] | None:
        with self.lock:
            for i, (kind, route, status) in enumerate(self.faults):
                if route in path:
                    del self.faults[i]
                    return kind, status
        return None

    def new_commit(self, repo: Repo, branch: str, message: str, files: dict[str, bytes]) -> Commit:
        parent = repo.branches.get(branch)
        seed = f"{repo.repo_id}\n{parent}\n{message}\n{len(repo.commits)}".encode()
        oid = hashlib.sha1(
            seed + b"".join(git_blob_oid(files[p]).encode() for p in sorted(files))
        ).hexdigest()
        commit = Commit(oid, parent, message, files)
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        return commit


_API_REPO = re.compile(r"^/api/(?P<kind>models|spaces)/(?P<repo>[^/]+/[^/]+)(?P<rest>/.*)?$")
_RESOLVE = re.compile(r"^/(?:(?P<kind>spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def repo_key(repo_id: str, kind: str | None) -> str:
    """The key of a repository in `HubState.repos`: "ORG/NAME" for a model, "spaces/ORG/NAME" for a Space."""
    return f"spaces/{repo_id}" if kind in ("space", "spaces") else repo_id


class HubHandler(BaseHTTPRequestHandler):
    """Routes one request against `self.server.hub` (a `HubState`)."""

    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet test output
        pass

    @property
    def hub(self) -> HubState:
        return self.server.hub

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = urlparse(self.path).path
        self.hub.requests.append((method, path))
        fault = self.hub.take_fault(path)
        if fault and fault[0] == "drop":
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length // 2)
            self.close_connection = True
            self.connection.shutdown(2)
            return
        body = self._read_body()
        if fault:
            return self._error(fault[1], "Internal Error", "injected failure")
        if self.hub.require_token and not self.headers.get("Authorization"):
            return self._error(401, None, UNAUTHORIZED)
        with self.hub.lock:
            self._route(method, path, body)

    def _route(self, method: str, path: str, body: bytes) -> None:
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            return self._json({"errors": [], "warnings": []})
        if match := _RESOLVE.match(path):
            key = repo_key(match["repo"], match["kind"])
            return self._resolve(method, key, match["rev"], unquote(match["path"]))
        if match := _API_REPO.match(path):
            return self._api(method, repo_key(match["repo"], match["kind"]), match["rest"] or "", body)
        self._error(404, None, f"No route for {method} {path}")

    def _api(self, method: str, repo_id: str, rest: str, body: bytes) -> None:
        repo = self._visible_repo(repo_id)
        if repo is None:
            return
        parts = rest.strip("/").split("/", 2)
        action, revision = parts[0], (parts[1] if len(parts) > 1 else "main")
        if method == "GET" and action in ("", "revision"):
            return self._model_info(repo, revision)
        if method == "GET" and action == "tree":
            return self._tree(repo, revision, parts[2] if len(parts) > 2 else "")
        if method == "POST" and action == "paths-info":
            return self._paths_info(repo, revision, body)
        if method == "POST" and action == "preupload":
            return self._preupload(repo, revision, json.loads(body))
        if method == "POST" and action == "commit":
            return self._commit(repo, unquote(revision), body)
        if method == "POST" and action == "branch":
            return self._create_branch(repo, unquote(revision), body)
        self._error(404, None, f"No route for {method} {repo_id}{rest}")

    # -- repositories -------------------------------------------------------------------------------
    def _create_repo(self, payload: dict) -> None:
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        key = repo_key(repo_id, payload.get("type"))
        url = f"{self.server.endpoint}/{key}"
        if key in self.hub.repos:
            return self._json({"error": "You already created this repo", "url": url}, status=409)
        if payload.get("type") == "space" and not payload.get("sdk"):
            return self._error(400, None, "sdk is required to create a Space")
        repo = Repo(repo_id, bool(payload.get("private")), sdk=payload.get("sdk"))
        self.hub.repos[key] = repo
        self.hub.new_commit(repo, "main", "initial commit", {".gitattributes": b"*.safetensors filter=lfs\n"})
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _create_branch(self, repo: Repo, branch: str, body: bytes) -> None:
        if branch in repo.branches:
            return self._error(409, None, f"Reference already exists: refs/heads/{branch}")
        start = json.loads(body or b"{}").get("startingPoint") or "main"
        commit = repo.resolve(start)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {start}")
        repo.branches[branch] = commit.oid
        self._json({})

    def _visible_repo(self, repo_id: str) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self.headers.get("Authorization")):
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        return repo

    def _commit_or_404(self, repo: Repo, revision: str) -> Commit | None:
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(revision)}")
        return commit

    def _model_info(self, repo: Repo, revision: str) -> None:
        commit = self._commit_or_404(repo, revision)
        if commit:
            siblings = [{"rfilename": p, "size": len(c)} for p, c in sorted(commit.files.items())]
            info = {"id": repo.repo_id, "sha": commit.oid, "private": repo.private, "siblings": siblings}
            self._json({**info, "sdk": repo.sdk} if repo.sdk else info)

    def _tree(self, repo: Repo, revision: str, folder: str) -> None:
        commit = self._commit_or_404(repo, revision)
        if commit is None:
            return
        prefix = unquote(folder).strip("/")
        prefix = prefix + "/" if prefix else ""
        entries, folders = [], set()
        recursive = "recursive=true" in (urlparse(self.path).query or "").lower()
        for path, content in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            entries.append(self._file_entry(path, content))
        dirs = [
            {"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest()} for d in folders
        ]
        self._json(sorted(dirs, key=lambda d: d["path"]) + entries)

    def _paths_info(self, repo: Repo, revision: str, body: bytes) -> None:
        commit = self._commit_or_404(repo, revision)
        if commit is None:
            return
        payload = json.loads(body) if body.startswith(b"{") else {}
        paths = payload.get("paths") or re.findall(r"paths=([^&]+)", body.decode())
        found = [self._file_entry(p, commit.files[p]) for p in map(unquote, paths) if p in commit.files]
        self._json(found)

    @staticmethod
    def _file_entry(path: str, content: bytes) -> dict:
        return {"type": "file", "path": path, "size": len(content), "oid": git_blob_oid(content)}

    # -- uploads ------------------------------------------------------------------------------------
    def _preupload(self, repo: Repo, revision: str, payload: dict) -> None:
        commit = repo.resolve(revision)
        existing = commit.files if commit else {}
        files = []
        for entry in payload.get("files", []):
            remote = existing.get(entry["path"])
            oid = git_blob_oid(remote) if remote is not None else None
            files.append({"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": files, "commitOid": commit.oid if commit else None})

    def _commit(self, repo: Repo, branch: str, body: bytes) -> None:
        if branch not in repo.branches:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {branch}")
        files = dict(repo.commits[repo.branches[branch]].files)
        message = "commit"
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                message = value.get("summary") or message
            elif item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
            elif item["key"] == "deletedFolder":
                files = {p: c for p, c in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                return self._error(400, None, f"Unsupported commit operation {item['key']!r}")
        commit = self.hub.new_commit(repo, branch, message, files)
        url = f"{self.server.endpoint}/{repo.repo_id}/commit/{commit.oid}"
        self._json({"commitUrl": url, "commitOid": commit.oid, "pullRequestUrl": None})

    # -- downloads ----------------------------------------------------------------------------------
    def _resolve(self, method: str, repo_id: str, revision: str, path: str) -> None:
        repo = self._visible_repo(repo_id)
        if repo is None:
            return
        commit = self._commit_or_404(repo, revision)
        if commit is None:
            return
        if path not in commit.files:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {unquote(revision)}")
        content = commit.files[path]
        self.send_response(200)
        self.send_header("X-Repo-Commit", commit.oid)
        self.send_header("ETag", f'"{git_blob_oid(content)}"')
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if method == "GET":
            self.wfile.write(content)

    # -- plumbing -----------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json(self, payload, status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: str | None, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class HubServer(ThreadingHTTPServer):
    """`HubServer().start()` serves on an ephemeral 127.0.0.1 port; `.endpoint` is its URL."""

    daemon_threads = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), HubHandler)
        self.hub = HubState()
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
