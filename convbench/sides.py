"""The two versions ``convbench ab`` compares, as it finds them: a python interpreter or virtualenv
("did upgrading torch slow my layers?"), or a git revision of the checkout the command runs in,
its files extracted with ``git archive REV | tar -x`` and run by this interpreter with the tree
first on ``PYTHONPATH``."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Side", "SideError", "last_line", "resolve"]


class SideError(Exception):
    """A side that cannot be set up or does not start: one line, and exit code 2."""


@dataclass(frozen=True)
class Side:
    """One version: what the user named, the interpreter and environment that run it."""

    role: str
    ref: str
    python: str
    env: dict[str, str] = field(repr=False)
    commit: str | None = None  # a git revision's commit; None for an environment
    tree: Path | None = None  # where the revision's files were extracted

    @property
    def label(self) -> str:
        return f"{self.ref} ({self.commit[:10]})" if self.commit else f"python {self.python}"


def last_line(text: str) -> str:
    """The last non-blank line of a command's output: what a one-line error quotes."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _interpreter(ref: str) -> str | None:
    """The python of a virtualenv folder, or ``ref`` itself if it is an executable file."""
    path = Path(ref)
    if path.is_dir():
        for candidate in (path / "bin" / "python", path / "Scripts" / "python.exe"):
            if candidate.is_file():
                return os.path.abspath(candidate)  # not resolved: a venv's python is a link
        return None
    return os.path.abspath(path) if path.is_file() and os.access(path, os.X_OK) else None


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    except OSError as exc:
        return subprocess.CompletedProcess(["git", *args], 127, "", str(exc))


def _extract(commit: str, repo: str, tree: Path) -> None:
    """``git archive COMMIT | tar -x -C TREE``: the revision's files, not the checkout's."""
    tree.mkdir(parents=True)
    archive = subprocess.Popen(
        ["git", "archive", "--format=tar", commit],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert archive.stdout is not None and archive.stderr is not None
    untar = subprocess.run(
        ["tar", "-x", "-C", str(tree)], stdin=archive.stdout, capture_output=True, check=False
    )
    archive.stdout.close()
    err = archive.stderr.read().decode(errors="replace")
    if archive.wait() or untar.returncode:
        why = last_line(err) or last_line(untar.stderr.decode(errors="replace"))
        raise SideError(f"cannot extract {commit[:10]}: {why}")


def resolve(role: str, ref: str, workdir: Path) -> Side:
    """``ref`` as a side: a python interpreter or virtualenv if it is one, else a git revision
    of the checkout in the working directory, extracted under ``workdir``."""
    python = _interpreter(ref)
    if python:
        return Side(role, ref, python, dict(os.environ))
    top = _git("rev-parse", "--show-toplevel")
    if top.returncode:
        raise SideError(
            f"{role} {ref!r} is not a python interpreter or virtualenv, and there is no git "
            f"checkout here to take it as a revision of ({last_line(top.stderr)})"
        )
    repo = top.stdout.strip()
    found = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if found.returncode:
        raise SideError(
            f"{role} {ref!r} is neither a revision of the git checkout {repo} nor a python "
            "interpreter or virtualenv"
        )
    commit = found.stdout.strip()
    tree = workdir / role
    _extract(commit, repo, tree)
    user = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), user]))}
    return Side(role, ref, sys.executable, env, commit, tree)
