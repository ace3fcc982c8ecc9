"""Searches survive real kills: resume after SIGKILL, and a distributed worker dying mid-trial."""

import json
import pathlib
import signal
import socket
import subprocess
import sys
import time

SCRIPT = pathlib.Path(__file__).parent / "fixtures" / "tune_child.py"


def _events(workdir):
    path = workdir / "events.log"
    return path.read_text().split("\n") if path.exists() else []


def _start(workdir, *args):
    return subprocess.Popen([sys.executable, str(SCRIPT), str(workdir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(child, workdir, predicate, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(_events(workdir)):
            return
        if child.poll() is not None:
            out = child.stdout.read()
            raise AssertionError(f"child exited ({child.returncode}) too early:\n{out[-3000:]}")
        time.sleep(0.05)
    child.kill()
    raise AssertionError("timed out waiting for the child")


def _kill(child):
    child.send_signal(signal.SIGKILL)  # a real kill: no cleanup runs
    child.wait(timeout=30)
    child.stdout.close()


def _trials(workdir):
    project = workdir / "search" / "search"
    return {p.parent.name: json.loads(p.read_text()) for p in project.glob("trial_*/trial.json")}


def _completed_files(workdir):
    """trial.json text and mtime of each completed trial."""
    project = workdir / "search" / "search"
    out = {}
    for p in project.glob("trial_*/trial.json"):
        text = p.read_text()
        if json.loads(text)["status"] == "COMPLETED":
            out[p.parent.name] = (text, p.stat().st_mtime_ns)
    return out


def _count(lines, word, pid):
    return sum(1 for line in lines if line.startswith(f"{word} {pid}"))


def test_search_killed_twice_resumes_without_losing_trials(tmp_path):
    # 1. Kill in the middle of the second trial (after its first epochs ran).
    child = _start(tmp_path, "--max-trials", "4")
    _wait_for(child, tmp_path, lambda ev: _count(ev, "start", child.pid) == 2)
    time.sleep(0.7)
    _kill(child)
    before = _completed_files(tmp_path)
    assert list(before) == ["trial_0"]

    # 2. Resume; kill again the moment the following trial starts.
    child = _start(tmp_path, "--max-trials", "4")
    _wait_for(child, tmp_path,
              lambda ev: _count(ev, "end", child.pid) == 1 and _count(ev, "start", child.pid) == 2)
    _kill(child)
    second = _completed_files(tmp_path)
    assert set(second) == {"trial_0", "trial_1"}
    assert second["trial_0"] == before["trial_0"]  # not run again, not rewritten

    # 3. Resume to the end.
    child = _start(tmp_path, "--max-trials", "4")
    out, _ = child.communicate(timeout=240)
    assert child.returncode == 0, out[-3000:]
    lines = _events(tmp_path)
    # Only the two unfinished trials ran in the last process.
    assert _count(lines, "start", child.pid) == 2
    trials = _trials(tmp_path)
    assert sorted(trials) == [f"trial_{i}" for i in range(4)]
    assert all(t["status"] == "COMPLETED" for t in trials.values())
    final = _completed_files(tmp_path)
    for name, state in second.items():
        assert final[name] == state
    rows = (tmp_path / "search" / "results.csv").read_text().strip().split("\n")
    assert len(rows) == 1 + 4


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_chief_and_two_workers_survive_a_dead_worker(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    common = ["--max-trials", "5", "--address", address]
    chief = _start(tmp_path, *common, "--distributed", "chief", "--tuner-id", "chief")
    w0 = _start(tmp_path, *common, "--distributed", "worker", "--tuner-id", "worker0")
    w1 = _start(tmp_path, *common, "--distributed", "worker", "--tuner-id", "worker1")
    procs = [chief, w0, w1]
    try:
        # worker1 dies in the middle of its first trial...
        _wait_for(w1, tmp_path, lambda ev: _count(ev, "start", w1.pid) == 1)
        time.sleep(0.5)
        _kill(w1)
        # ...and a worker restarted with its id is handed that trial back.
        w1b = _start(tmp_path, *common, "--distributed", "worker", "--tuner-id", "worker1")
        procs.append(w1b)
        for p in (w0, w1b, chief):
            out, _ = p.communicate(timeout=300)
            assert p.returncode == 0, out[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    lines = _events(tmp_path)
    trials = _trials(tmp_path)
    assert len(trials) == 5 and all(t["status"] == "COMPLETED" for t in trials.values())
    runners = {line.split()[1] for line in lines if line.startswith("end ")}
    assert str(chief.pid) not in runners  # the chief only hands out trials
    assert str(w0.pid) in runners and str(w1b.pid) in runners
    assert _count(lines, "end", w1.pid) == 0
    # The chief wrote the results; its final state lists no trial as running.
    assert (tmp_path / "search" / "best_model.keras").exists()
    oracle = json.loads((tmp_path / "search" / "search" / "oracle.json").read_text())
    assert oracle["ongoing_trials"] == {}

