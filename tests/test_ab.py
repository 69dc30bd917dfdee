"""``convbench ab`` for real: a small git repository whose revisions differ in real work, two
worker processes per run, records on disk, verdicts and exit codes as a user meets them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import default_sigint, run_cli

from convbench.results import Record
from convbench.verdicts import compare

TESTS = Path(__file__).resolve().parent
SOURCE = TESTS.parent / "convbench"
SMALL = 'mb1ic8ih12oc8kh3ph1n"small"'
SMALL_IC4 = 'mb1ic4ih12oc8kh3ph1n"small_ic4"'
PYPROJECT = '[project]\nname = "convbench"\nversion = "0.1.0"\n'

# Appended to the torch backend's module: every call computes the convolution twice.
TWICE = """

_prepare_once = TorchBackend.prepare


def _prepare_twice(self, spec, weight, bias):
    once = _prepare_once(self, spec, weight, bias)

    def run(x):
        once.fn(x)
        return once.fn(x)

    return Prepared(run, once.algorithm, once.params)


TorchBackend.prepare = _prepare_twice
"""

# Appended after TWICE: on 4 input channels the process segfaults a few calls into the timing.
SEGFAULT = """

_prepare_sound = TorchBackend.prepare


def _prepare_crashing(self, spec, weight, bias):
    sound = _prepare_sound(self, spec, weight, bias)
    calls = [0]

    def run(x):
        calls[0] += 1
        if spec.ic == 4 and calls[0] > 5:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGSEGV)
        return sound.fn(x)

    return Prepared(run, sound.algorithm, sound.params)


TorchBackend.prepare = _prepare_crashing
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false",
         *args],
        cwd=repo, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def _commit(repo: Path, tag: str) -> None:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", tag)
    _git(repo, "tag", tag)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Revisions A (this convbench), B (torch computes twice), C (B, and torch segfaults on
    4 input channels) and broken (a syntax error in convbench/__init__.py); the working tree
    is C, so the command itself imports."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(SOURCE, root / "convbench", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "pyproject.toml").write_text(PYPROJECT)
    _git(root, "init", "-q")
    _commit(root, "A")
    native = root / "convbench" / "backends" / "torch_native.py"
    native.write_text(native.read_text() + TWICE)
    _commit(root, "B")
    native.write_text(native.read_text() + SEGFAULT)
    _commit(root, "C")
    init = root / "convbench" / "__init__.py"
    good = init.read_text()
    init.write_text(good + "\ndef broken(:\n")
    _commit(root, "broken")
    init.write_text(good)
    return root


def _ab_folder(out: Path) -> Path:
    (folder,) = out.glob("ab-*")
    return folder


def _records(folder: Path, role: str) -> list[Record]:
    lines = (folder / role / "records.jsonl").read_text().splitlines()
    return [Record.from_dict(json.loads(line)) for line in lines]


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convbench: error: "), proc.stderr
    return lines[0]


def test_ab_help_lists_its_options(tmp_path: Path) -> None:
    proc = run_cli("ab", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for option in ("BASE", "NEW", "--suite", "--spec", "--backend", "--device", "--dtype",
                   "--threads", "--seed", "--budget", "--threshold", "--alpha",
                   "--error-factor", "--html", "--out", "--instructions"):  # fmt: skip
        assert option in proc.stdout, option
    # What ab cannot honour is not offered: it pairs versions, not backends, and sets its own
    # time budget.
    assert "--baseline" not in proc.stdout and "--quick" not in proc.stdout


def test_ab_finds_the_backend_that_does_twice_the_work(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = run_cli(
        "ab", "A", "B", "--spec", SMALL, "--backend", "torch,direct", "--threads", "1",
        "--out", str(out), "--html", str(tmp_path / "ab.html"),
        cwd=repo,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ab: WORSE: 1 slower" in proc.stdout
    folder = _ab_folder(out)
    base, new = _records(folder, "base"), _records(folder, "new")
    assert [r.backend for r in base] == [r.backend for r in new] == ["torch", "direct"]
    for a, b in zip(base, new, strict=True):
        assert a.status == b.status == "ok"
        assert len(a.samples_s) == len(b.samples_s) == a.rounds >= 16
    c = compare(base, new, paired=True)
    verdicts = {ch.key[1]: ch for ch in c.changes}
    assert verdicts["torch"].verdict == "slower"
    assert 1.6 < verdicts["torch"].ratio < 2.5, verdicts["torch"].ratio
    # direct times no candidates in prepare: what it computes cannot differ between sides.
    assert verdicts["direct"].verdict == "unchanged"
    envs = [
        json.loads((folder / role / "environment.json").read_text()) for role in ("base", "new")
    ]
    commits = [_git(repo, "rev-parse", f"{tag}^{{commit}}") for tag in ("A", "B")]
    assert [e["git_commit"] for e in envs] == commits
    assert [e["side"] for e in envs] == [{"revision": "A"}, {"revision": "B"}]
    assert "git_commit" in proc.stdout  # the environment differences name the commits
    assert (folder / "report.html").is_file() and (tmp_path / "ab.html").is_file()
    assert "ab: base A (" in proc.stdout and "new B (" in proc.stdout


def test_ab_of_one_revision_against_itself_finds_nothing(repo: Path, tmp_path: Path) -> None:
    """Both sides load the user's plugin backends: PYTHONPATH keeps what the user had."""
    plugins = {"PYTHONPATH": str(TESTS), "CONVBENCH_PLUGINS": "plugin_backends"}
    proc = run_cli(
        "ab", "A", "A", "--spec", SMALL, "--backend", "torch,direct,test-injected",
        "--threads", "1", "--out", str(tmp_path), cwd=repo,
        env=plugins,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ab: nothing got significantly slower or less accurate" in proc.stdout
    assert "environment: the same" in proc.stdout
    folder = _ab_folder(tmp_path)
    for role in ("base", "new"):
        assert [r.status for r in _records(folder, role)] == ["ok"] * 3


def test_ab_of_two_environments(tmp_path: Path) -> None:
    """The installed convbench, named once as an interpreter and once as its virtualenv."""
    venv = Path(sys.prefix)
    new = str(venv) if (venv / "bin" / "python").is_file() else sys.executable
    proc = run_cli(
        "ab", sys.executable, new, "--spec", SMALL, "--backend", "torch", "--threads", "1",
        "--out", str(tmp_path / "res"), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = _ab_folder(tmp_path / "res")
    env = json.loads((folder / "base" / "environment.json").read_text())
    assert env["side"]["python"] == sys.executable and env["git_commit"] is None
    assert [r.status for r in _records(folder, "new")] == ["ok"]


def test_ab_a_revision_that_does_not_exist_is_one_line(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = run_cli("ab", "A", "no-such-rev", "--spec", SMALL, "--out", str(out), cwd=repo)
    assert "'no-such-rev'" in _one_error_line(proc)
    assert not out.exists()


def test_ab_a_revision_that_does_not_import_is_one_line(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = run_cli("ab", "A", "broken", "--spec", SMALL, "--out", str(out), cwd=repo)
    line = _one_error_line(proc)
    assert "new broken (" in line and "SyntaxError" in line
    assert not out.exists()


def test_ab_a_worker_that_segfaults_fails_its_case_and_the_run_goes_on(
    repo: Path, tmp_path: Path
) -> None:
    proc = run_cli(
        "ab", "B", "C", "--spec", SMALL_IC4, "--spec", SMALL, "--backend", "torch",
        "--threads", "1", "--out", str(tmp_path), cwd=repo,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    folder = _ab_folder(tmp_path)
    base, new = _records(folder, "base"), _records(folder, "new")
    assert [r.status for r in base] == ["ok", "ok"]
    assert [r.status for r in new] == ["failed", "ok"]  # a fresh worker took the next case
    assert "SIGSEGV" in new[0].reason
    assert "1 failed" in proc.stdout


def test_ab_interrupted_keeps_the_finished_cases(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = subprocess.Popen(
        [sys.executable, "-m", "convbench", "ab", "A", "A", "--suite", "smoke", "--backend",
         "torch", "--threads", "1", "--out", str(out)],
        cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_sigint,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            done = list(out.glob("ab-*/new/records.jsonl"))
            if done and done[0].read_text().count("\n") >= 1:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    folder = _ab_folder(out)
    base, new = _records(folder, "base"), _records(folder, "new")
    assert 1 <= len(new) < 7 and len(base) >= len(new)
    assert f"interrupted after {len(new)} of 7 cases" in stdout
    assert "Traceback" not in stderr


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="no /proc to read threads from")
def test_a_worker_answers_only_once_its_threads_sleep() -> None:
    """OpenMP's threads spin for milliseconds after each parallel region; a worker that
    answered while its threads spun would slow the other side's calls that start next."""
    from convbench.ab import WORKER

    proc = subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps({"threads": 2, "cpus": None})],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None

    def ask(request: dict[str, object]) -> dict[str, object]:
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    def running() -> list[str]:
        """The worker's threads that run, but for its main one, which goes on to read the
        next request."""
        tasks = Path(f"/proc/{proc.pid}/task")
        others = [t for t in os.listdir(tasks) if t != str(proc.pid)]
        stats = [(tasks / t / "stat").read_text() for t in others]
        return [s for s in stats if s[s.rindex(")") + 2] == "R"]

    try:
        assert "hello" in json.loads(proc.stdout.readline())
        case = {"spec": "mb8ic64ih28oc64kh3ph1", "fill": "randn", "backend": "torch",
                "device": "cpu", "dtype": "float32"}  # fmt: skip
        assert ask({"op": "prepare", "id": 1, "case": case, "seed": 0})["status"] == "ready"
        for _ in range(5):
            assert ask({"op": "time", "id": 1, "number": 3})["seconds"] > 0
            assert running() == []
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="no /proc to read threads from")
def test_a_thread_that_never_sleeps_is_waited_for_only_until_the_limit() -> None:
    """A worker stops waiting for its threads once one did not sleep within the limit."""
    from convbench.ab import WORKER

    script = f"""
import importlib.util, threading, time
spec = importlib.util.spec_from_file_location("worker", {str(WORKER)!r})
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)
stop = threading.Event()
busy = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])
busy.start()
t0 = time.perf_counter()
spinning = worker.quiesce(0.05)
waited = time.perf_counter() - t0
stop.set()
busy.join()
print(spinning, waited >= 0.05, worker.quiesce(0.05))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.split() == ["False", "True", "True"]  # the worker prints on fd 2
