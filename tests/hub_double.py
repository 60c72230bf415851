"""A stand-in for `huggingface_hub.HfApi` with the Hub's commit semantics, backed by real git repositories.

Each repo is a bare git repository. As on the Hub: a new repo starts with one commit holding
`.gitattributes`; a commit's tree is its parent's tree plus its operations (adds and deletes); a commit
whose `parent_commit` is not the branch head is refused (HTTP 412); deleting a path that is not there is
refused (404); a tag that exists is refused (409) unless `exist_ok`; revisions are branches, tags or
commit ids; unknown ones give `RevisionNotFoundError`, missing files `EntryNotFoundError`; the returned
objects are huggingface_hub's own (`GitRefs`, `CommitInfo`, `RepoFile`, `RepoFolder`).

What it forgives: no LFS or Xet (every file is a plain blob, sizes are the file's bytes), no rate limits,
no network latency, no authentication (the token is only recorded per call). Faults are injected on
purpose: `fail[name]` lists HTTP statuses the next calls of `name` raise, `lose` a file the next commit
silently drops (a Hub that loses a file, for the publisher's tree check).
"""

from __future__ import annotations

import os
import subprocess
import fnmatch
import hashlib
import io
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

import httpx2
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.hf_api import CommitInfo, GitRefInfo, GitRefs, RepoFile, RepoFolder

GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
_ENV = {"GIT_AUTHOR_NAME": "hub", "GIT_AUTHOR_EMAIL": "hub@localhost", "GIT_COMMITTER_NAME": "hub",
        "GIT_COMMITTER_EMAIL": "hub@localhost", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def _http_error(status: int, name: str, message: str, cls: type[HfHubHTTPError] = HfHubHTTPError) -> HfHubHTTPError:
    request = httpx2.Request("POST", f"https://huggingface.co/api/{name}")
    kind = "Server Error" if status >= 500 else "Client Error"
    return cls(f"{status} {kind}: {message} for url {request.url}", response=httpx2.Response(status, request=request))


class GitHubApi:
    """`HfApi`'s publishing calls over git repositories under `root` (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, list[int]] = {}
        self.lose: str | None = None
        self.private: dict[str, bool] = {}

    # ------------------------------------------------------------------------------------------ plumbing

    def _record(self, name: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((name, {k: v for k, v in kwargs.items() if k != "operations"}))
        if self.fail.get(name):
            status = self.fail[name].pop(0)
            raise _http_error(status, name, f"injected (token {kwargs.get('token')})")

    def _dir(self, repo_id: str, repo_type: str | None) -> Path:
        return self.root / f"{repo_type or 'model'}s--{repo_id.replace('/', '--')}.git"

    def _repo(self, repo_id: str, repo_type: str | None) -> Path:
        path = self._dir(repo_id, repo_type)
        if not path.is_dir():
            raise _http_error(404, repo_id, f"Repository Not Found: {repo_id}", RepositoryNotFoundError)
        return path

    @staticmethod
    def git(repo: Path, *args: str, data: bytes | None = None, env: dict[str, str] | None = None) -> str:
        out = subprocess.run(["git", "--git-dir", str(repo), *args], input=data, capture_output=True, check=True,
                             env={**os.environ, **_ENV, **(env or {})})
        return out.stdout.decode().strip()

    def _ref(self, repo: Path, name: str) -> str | None:
        try:
            return self.git(repo, "rev-parse", "--verify", "-q", f"{name}^{{commit}}")
        except subprocess.CalledProcessError:
            return None

    def resolve(self, repo_id: str, revision: str | None, repo_type: str | None = "dataset") -> str:
        repo = self._repo(repo_id, repo_type)
        rev = revision or "main"
        for name in (f"refs/heads/{rev}", f"refs/tags/{rev}", rev):
            if sha := self._ref(repo, name):
                return sha
        raise _http_error(404, repo_id, f"Invalid rev id: {rev}", RevisionNotFoundError)

    def files(self, repo_id: str, revision: str | None = None, repo_type: str | None = "dataset") -> dict[str, bytes]:
        """Every file of a revision's tree with its bytes (for tests to compare)."""
        repo, sha = self._repo(repo_id, repo_type), self.resolve(repo_id, revision, repo_type)
        names = self.git(repo, "ls-tree", "-r", "--name-only", sha).splitlines()
        return {n: subprocess.run(["git", "--git-dir", str(repo), "cat-file", "blob", f"{sha}:{n}"],
                                  capture_output=True, check=True).stdout for n in names}

    def checkout(self, repo_id: str, revision: str, dest: Path, repo_type: str | None = "dataset") -> Path:
        """A revision's tree as a folder, as `snapshot_download` would give it."""
        repo, sha = self._repo(repo_id, repo_type), self.resolve(repo_id, revision, repo_type)
        archive = subprocess.run(["git", "--git-dir", str(repo), "archive", sha], capture_output=True, check=True).stdout
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
        return dest

    # ------------------------------------------------------------------------------------------- the API

    def create_repo(self, repo_id: str, *, repo_type: str | None = None, exist_ok: bool = False,
                    private: bool | None = None, **kw: Any) -> str:
        self._record("create_repo", {"repo_type": repo_type, "exist_ok": exist_ok, "private": private, **kw})
        path = self._dir(repo_id, repo_type)
        if path.exists():
            if not exist_ok:
                raise _http_error(409, repo_id, "You already created this repo")
            return f"https://huggingface.co/{repo_id}"  # as on the Hub: an existing repo keeps its visibility
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True, env={**os.environ, **_ENV})
        blob = self.git(path, "hash-object", "-w", "--stdin", data=GITATTRIBUTES)
        index = path / "index.tmp"
        env = {"GIT_INDEX_FILE": str(index)}
        self.git(path, "update-index", "--add", "--cacheinfo", f"100644,{blob},.gitattributes", env=env)
        tree = self.git(path, "write-tree", env=env)
        index.unlink()
        commit = self.git(path, "commit-tree", tree, "-m", "initial commit")
        self.git(path, "update-ref", "refs/heads/main", commit)
        self.private[f"{repo_type}:{repo_id}"] = bool(private)
        return f"https://huggingface.co/{repo_id}"

    def repo_info(self, repo_id: str, *, repo_type: str | None = None, **kw: Any) -> Any:
        self._record("repo_info", {"repo_type": repo_type, **kw})
        self._repo(repo_id, repo_type)
        return SimpleNamespace(id=repo_id, private=self.private.get(f"{repo_type}:{repo_id}", False))

    def update_repo_settings(self, repo_id: str, *, private: bool | None = None, repo_type: str | None = None,
                             **kw: Any) -> None:
        self._record("update_repo_settings", {"repo_type": repo_type, "private": private, **kw})
        self._repo(repo_id, repo_type)
        if private is not None:
            self.private[f"{repo_type}:{repo_id}"] = private

    def list_repo_refs(self, repo_id: str, *, repo_type: str | None = None, **kw: Any) -> GitRefs:
        self._record("list_repo_refs", {"repo_type": repo_type, **kw})
        repo = self._repo(repo_id, repo_type)

        def refs(kind: str) -> list[GitRefInfo]:
            lines = self.git(repo, "for-each-ref", "--format=%(refname:short) %(objectname) %(*objectname)",
                             f"refs/{kind}").splitlines()
            out = []
            for line in lines:
                name, obj, peeled = (line.split() + [""])[:3]
                out.append(GitRefInfo(name=name, ref=f"refs/{kind}/{name}", target_commit=peeled or obj))
            return out

        return GitRefs(branches=refs("heads"), converts=[], tags=refs("tags"), pull_requests=None)

    def create_commit(self, repo_id: str, operations: Iterable[Any], *, commit_message: str,
                      repo_type: str | None = None, revision: str | None = None, parent_commit: str | None = None,
                      **kw: Any) -> CommitInfo:
        operations = list(operations)
        self._record("create_commit", {"commit_message": commit_message, "repo_type": repo_type,
                                       "parent_commit": parent_commit, **kw})
        repo, branch = self._repo(repo_id, repo_type), revision or "main"
        head = self._ref(repo, f"refs/heads/{branch}")
        if parent_commit is not None and parent_commit != head:
            raise _http_error(412, repo_id, "A commit has happened since. Please refresh and try again.")
        index = repo / f"index.{os.getpid()}"
        env = {"GIT_INDEX_FILE": str(index)}
        try:
            self.git(repo, "read-tree", *([head] if head else ["--empty"]), env=env)
            present = set(self.git(repo, "ls-files", env=env).splitlines())
            for op in operations:
                if isinstance(op, CommitOperationDelete):
                    path = op.path_in_repo.rstrip("/")
                    hit = [p for p in present if p == path or (op.is_folder and p.startswith(path + "/"))]
                    if not hit:
                        raise _http_error(404, repo_id, f"Cannot delete {op.path_in_repo}: not in {branch}",
                                          EntryNotFoundError)
                    self.git(repo, "rm", "--cached", "-q", "-r", "--", path, env=env)
                    present -= set(hit)
                elif isinstance(op, CommitOperationAdd):
                    if op.path_in_repo == self.lose:
                        continue
                    src = op.path_or_fileobj
                    data = Path(src).read_bytes() if isinstance(src, (str, Path)) else (
                        src if isinstance(src, bytes) else src.read())
                    blob = self.git(repo, "hash-object", "-w", "--stdin", data=data)
                    self.git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{op.path_in_repo}", env=env)
                    present.add(op.path_in_repo)
                else:
                    raise TypeError(f"unsupported commit operation {op!r}")
            tree = self.git(repo, "write-tree", env=env)
        finally:
            index.unlink(missing_ok=True)
        self.lose = None
        commit = self.git(repo, "commit-tree", tree, *(["-p", head] if head else []), "-m", commit_message)
        # compare-and-swap, as the Hub's own branch update: a concurrent commit makes this fail
        self.git(repo, "update-ref", f"refs/heads/{branch}", commit, head or "")
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{commit}", commit_message=commit_message,
                          commit_description="", oid=commit, pr_url=None)

    def create_tag(self, repo_id: str, *, tag: str, revision: str | None = None, tag_message: str | None = None,
                   repo_type: str | None = None, exist_ok: bool = False, **kw: Any) -> None:
        self._record("create_tag", {"tag": tag, "revision": revision, "tag_message": tag_message,
                                    "repo_type": repo_type, "exist_ok": exist_ok, **kw})
        repo, sha = self._repo(repo_id, repo_type), self.resolve(repo_id, revision, repo_type)
        if self._ref(repo, f"refs/tags/{tag}"):
            if exist_ok:
                return
            raise _http_error(409, repo_id, f"Tag reference {tag} already exists")
        self.git(repo, "tag", *(["-a", "-m", tag_message] if tag_message else []), tag, sha)

    def delete_tag(self, repo_id: str, *, tag: str, repo_type: str | None = None, **kw: Any) -> None:
        self._record("delete_tag", {"tag": tag, "repo_type": repo_type, **kw})
        repo = self._repo(repo_id, repo_type)
        if not self._ref(repo, f"refs/tags/{tag}"):
            raise _http_error(404, repo_id, f"Invalid rev id: {tag}", RevisionNotFoundError)
        self.git(repo, "tag", "-d", tag)

    def list_repo_tree(self, repo_id: str, path_in_repo: str | None = None, *, recursive: bool = False,
                       revision: str | None = None, repo_type: str | None = None, **kw: Any) -> list[Any]:
        self._record("list_repo_tree", {"revision": revision, "recursive": recursive, "repo_type": repo_type, **kw})
        repo, sha = self._repo(repo_id, repo_type), self.resolve(repo_id, revision, repo_type)
        args = ["ls-tree", "-l", *(["-r", "-t"] if recursive else []), sha, *([f"{path_in_repo}/"] if path_in_repo else [])]
        out = []
        for line in self.git(repo, *args).splitlines():
            meta, path = line.split("\t", 1)
            _, kind, oid, size = meta.split()
            if kind == "tree":
                out.append(RepoFolder(path=path, oid=oid))
            elif fnmatch.fnmatch(path.rsplit("/", 1)[-1], "*.parquet"):  # LFS per .gitattributes, as on the Hub
                data = subprocess.run(["git", "--git-dir", str(repo), "cat-file", "blob", oid], capture_output=True,
                                      check=True).stdout
                out.append(RepoFile(path=path, size=int(size), oid=oid, lfs={
                    "size": int(size), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 134}))
            else:
                out.append(RepoFile(path=path, size=int(size), oid=oid))
        return out

    def hf_hub_download(self, repo_id: str, filename: str, *, revision: str | None = None,
                        repo_type: str | None = None, **kw: Any) -> str:
        self._record("hf_hub_download", {"filename": filename, "revision": revision, "repo_type": repo_type, **kw})
        sha = self.resolve(repo_id, revision, repo_type)
        files = self.files(repo_id, sha, repo_type)
        if filename not in files:
            raise _http_error(404, repo_id, f"Entry Not Found for url {filename}", EntryNotFoundError)
        path = self.root / "downloads" / sha / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[filename])
        return str(path)
