"""An in-memory stand-in for the Hugging Face Hub at the `HfApi` boundary, and a writer of the local Hub cache.

`FakeHub.api` replaces `simple_ddpm.hub.HfApi`: it implements exactly the `HfApi` methods the package calls, so a
call to any other method fails the test. Permissions follow the Hub's: a token reads everything and writes only
where it has write access; `create_repo(exist_ok=True)` on an existing repo succeeds without write access, as
`HfApi.create_repo` does after its fallback to `repo_info`.

`FakeHub.export_to_cache` writes what was pushed into the cache layout that `huggingface_hub` reads offline
(`models--USER--NAME/snapshots/<sha>/...`, `refs/<branch>`, and the `trees/<sha>.json` listing that diffusers uses
offline, as online, to decide which files a pipeline needs).
"""

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import filter_repo_objects

WRITE_TOKEN = "hf_WriteTokenOfAlice0123456789"
READ_TOKEN = "hf_ReadTokenOfAlice0123456789"


def install_fake_hub(monkeypatch) -> "FakeHub":
    """Replace `simple_ddpm.hub.HfApi` by a FakeHub where alice has a write and a read-only token; no stored login."""
    from simple_ddpm import hub

    fake = FakeHub({WRITE_TOKEN: ("alice", True), READ_TOKEN: ("alice", False)})
    monkeypatch.setattr(hub, "HfApi", fake.api)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub, "get_token", lambda: None)
    return fake


def http_error(status: int, what: str) -> HfHubHTTPError:
    response = SimpleNamespace(status_code=status, headers={}, request=None)
    return HfHubHTTPError(f"{status} Client Error for {what}", response=response)


class FakeHub:
    """Repos as commit histories of {path: bytes}; `tokens` maps a token to (user, can_write)."""

    def __init__(self, tokens: dict[str, tuple[str, bool]]):
        self.tokens = tokens
        self.repos: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []  # (method, repo_id or "")
        self.commit_gate = threading.Event()  # uploads wait on it: lets a test hold the worker thread
        self.commit_gate.set()
        self.fail_paths: set[str] = set()  # uploads to these path_in_repo fail with HTTP 500

    def api(self, token: str | None = None) -> "FakeHfApi":
        return FakeHfApi(self, token)

    def add_repo(self, repo_id: str) -> None:
        files = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
        sha = _commit_sha(files, parent="")
        self.repos[repo_id] = {"commits": {sha: files}, "branches": {"main": sha}, "order": [sha]}

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo["commits"][repo["branches"].get(revision, revision)]

    def all_uploaded_bytes(self) -> list[tuple[str, bytes]]:
        return [
            (path, data)
            for repo in self.repos.values()
            for files in repo["commits"].values()
            for path, data in files.items()
        ]

    def commit(self, repo_id: str, new_files: dict[str, bytes], branch: str = "main") -> str:
        repo = self.repos[repo_id]
        parent = repo["branches"][branch]
        files = {**repo["commits"][parent], **new_files}
        sha = _commit_sha(files, parent)
        repo["commits"][sha] = files
        repo["branches"][branch] = sha
        repo["order"].append(sha)
        return sha

    def publish(self, repo_id: str, folder: Path) -> None:
        """A folder committed as it is, as anyone could push it without our code."""
        if repo_id not in self.repos:
            self.add_repo(repo_id)
        self.commit(repo_id, folder_files(folder))

    def export_to_cache(self, repo_id: str, cache_dir: Path) -> None:
        storage = cache_dir / f"models--{repo_id.replace('/', '--')}"
        repo = self.repos[repo_id]
        for sha, files in repo["commits"].items():
            entries = {}
            for path, data in files.items():
                target = storage / "snapshots" / sha / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                entries[path] = {"size": len(data), "blob_id": hashlib.sha1(data).hexdigest()}
            (storage / "trees").mkdir(parents=True, exist_ok=True)
            (storage / "trees" / f"{sha}.json").write_text(json.dumps({"format_version": 1, "files": entries}))
        for branch, sha in repo["branches"].items():
            (storage / "refs" / branch).parent.mkdir(parents=True, exist_ok=True)
            (storage / "refs" / branch).write_text(sha)


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file below `folder`, by its relative path with "/" separators."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _commit_sha(files: dict[str, bytes], parent: str) -> str:
    digest = hashlib.sha1(parent.encode())
    for path in sorted(files):
        digest.update(path.encode() + hashlib.sha1(files[path]).digest())
    return digest.hexdigest()


class FakeHfApi:
    def __init__(self, hub: FakeHub, token: str | None):
        self.hub = hub
        self.token = token
        self._pool = ThreadPoolExecutor(max_workers=1)  # HfApi.run_as_future also runs one call at a time

    def _user(self) -> tuple[str, bool]:
        if self.token not in self.hub.tokens:
            raise http_error(401, "whoami-v2")
        return self.hub.tokens[self.token]

    def _require_write(self, repo_id: str) -> None:
        user, can_write = self._user()
        if not can_write or repo_id.split("/")[0] != user:
            raise http_error(403, repo_id)
        if repo_id not in self.hub.repos:
            raise http_error(404, repo_id)

    def whoami(self) -> dict:
        self.hub.calls.append(("whoami", ""))
        return {"name": self._user()[0]}

    def create_repo(self, repo_id: str, *, private: bool | None = None, exist_ok: bool = False) -> SimpleNamespace:
        self.hub.calls.append(("create_repo", repo_id))
        user, can_write = self._user()
        repo_id = repo_id if "/" in repo_id else f"{user}/{repo_id}"
        if repo_id in self.hub.repos:
            if not exist_ok:
                raise http_error(409, repo_id)
        elif not can_write or repo_id.split("/")[0] != user:
            raise http_error(403, repo_id)
        else:
            self.hub.add_repo(repo_id)
            self.hub.repos[repo_id]["private"] = bool(private)
        return SimpleNamespace(repo_id=repo_id)

    def create_branch(self, repo_id: str, *, branch: str, revision: str | None = None) -> None:
        self.hub.calls.append(("create_branch", repo_id))
        self._require_write(repo_id)
        repo = self.hub.repos[repo_id]
        if branch in repo["branches"]:
            raise http_error(409, branch)
        repo["branches"][branch] = repo["branches"].get(revision or "main", revision)

    def delete_branch(self, repo_id: str, *, branch: str) -> None:
        self.hub.calls.append(("delete_branch", repo_id))
        self._require_write(repo_id)
        del self.hub.repos[repo_id]["branches"][branch]

    def _commit(self, repo_id: str, files: dict[str, bytes], path_in_repo: str) -> SimpleNamespace:
        self.hub.commit_gate.wait(timeout=30)
        self._require_write(repo_id)
        if path_in_repo in self.hub.fail_paths:
            raise http_error(500, path_in_repo)
        sha = self.hub.commit(repo_id, files)
        return SimpleNamespace(oid=sha, commit_url=f"https://huggingface.co/{repo_id}/commit/{sha}")

    def upload_folder(
        self,
        *,
        repo_id: str,
        folder_path: str | Path,
        path_in_repo: str | None = None,
        commit_message: str,
        ignore_patterns: list[str] | None = None,
    ) -> SimpleNamespace:
        self.hub.calls.append(("upload_folder", repo_id))
        folder = Path(folder_path)
        relative = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        prefix = f"{path_in_repo}/" if path_in_repo else ""
        files = {
            prefix + rel: (folder / rel).read_bytes()
            for rel in filter_repo_objects(relative, ignore_patterns=ignore_patterns)
        }
        return self._commit(repo_id, files, path_in_repo or "")

    def upload_file(
        self, *, path_or_fileobj: str | Path, path_in_repo: str, repo_id: str, commit_message: str
    ) -> SimpleNamespace:
        self.hub.calls.append(("upload_file", repo_id))
        return self._commit(repo_id, {path_in_repo: Path(path_or_fileobj).read_bytes()}, path_in_repo)

    def run_as_future(self, fn, *args, **kwargs):
        return self._pool.submit(fn, *args, **kwargs)
