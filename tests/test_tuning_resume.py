"""Searches survive real kills (resume after SIGKILL, a distributed worker dying mid-trial),
and a resume is the same search: a changed setting is refused, naming each difference."""

import json
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.data.fingerprint import array_digest
from kertransfer.errors import SearchError

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


def _epochs_of_trial(lines, pid, n):
    """Epochs ``pid`` finished in its ``n``-th trial (from 1) so far."""
    mine = [line.split()[0] for line in lines if line.endswith(f" {pid}")]
    starts = [i for i, word in enumerate(mine) if word == "start"]
    if len(starts) < n:
        return 0
    return sum(1 for word in mine[starts[n - 1]:] if word == "epoch")


def test_search_killed_twice_resumes_without_losing_trials(tmp_path):
    # 1. Kill in the middle of the second trial: its first epoch (of 3) ran.
    child = _start(tmp_path, "--max-trials", "4", "--hold-at", "2", "1")
    _wait_for(child, tmp_path, lambda ev: _epochs_of_trial(ev, child.pid, 2) >= 1)
    _kill(child)
    before = _completed_files(tmp_path)
    assert list(before) == ["trial_0"]

    # 2. Resume; kill again the moment the following trial starts.
    child = _start(tmp_path, "--max-trials", "4", "--hold-at", "2", "0")
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
    common = ["--max-trials", "3", "--address", address]
    chief = _start(tmp_path, *common, "--distributed", "chief", "--tuner-id", "chief")
    w0 = _start(tmp_path, *common, "--distributed", "worker", "--tuner-id", "worker0")
    w1 = _start(tmp_path, *common, "--distributed", "worker", "--tuner-id", "worker1",
                "--hold-at", "1", "1")
    procs = [chief, w0, w1]
    try:
        # worker1 dies in the middle of its first trial...
        _wait_for(w1, tmp_path, lambda ev: _epochs_of_trial(ev, w1.pid, 1) >= 1)
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
    assert len(trials) == 3 and all(t["status"] == "COMPLETED" for t in trials.values())
    runners = {line.split()[1] for line in lines if line.startswith("end ")}
    assert str(chief.pid) not in runners  # the chief only hands out trials
    assert str(w0.pid) in runners and str(w1b.pid) in runners
    assert _count(lines, "end", w1.pid) == 0
    # The chief wrote the results; its final state lists no trial as running.
    assert (tmp_path / "search" / "best_model.keras").exists()
    oracle = json.loads((tmp_path / "search" / "search" / "oracle.json").read_text())
    assert oracle["ongoing_trials"] == {}



# -- A resume is the same search: every setting that defines it is compared ----------------

_SHAPE = (16, 16, 3)


def _arrays(shift=0.0):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (96, *_SHAPE)).astype("float32")
    y = (np.arange(96) % 4).astype("int32")
    x[0, 0, 0, 0] += shift
    return (x[:64], y[:64]), (x[64:], y[64:])


def _weights_file(directory, seed, backbone):
    keras.utils.set_random_seed(seed)
    model = kt.build_transfer_model(backbone, 4, input_shape=_SHAPE, weights=None,
                                    freeze="none")
    path = directory / f"weights_{seed}.keras"
    model.save(path)
    return path


class _Search:
    """One finished one-trial search and the call that made it, to vary one setting at a time."""

    def __init__(self, root, backbone):
        self.backbone = backbone
        self.weights = _weights_file(root, 1, backbone)
        self.other_weights = _weights_file(root, 2, backbone)
        self.directory = root / "search"
        self.run()

    def run(self, directory=None, data=None, hm=None, **kw):
        hm_kw = {"num_classes": 4, "input_shape": _SHAPE, "weights": str(self.weights),
                 "epochs": 2, "batch_size": 32, "space": {"head_epochs": 1}}
        hm_kw.update(hm or {})
        (x, y), val = data or _arrays()
        args = {"max_trials": 1, "epochs": 2, "directory": directory or self.directory,
                "verbose": 0, "save_best": False, "validation_data": val}
        args.update(kw)
        return kt.tune(kt.TransferHyperModel(self.backbone, **hm_kw), (x, y), **args)

    def copy(self, tmp_path):
        shutil.copytree(self.directory, tmp_path / "search")
        return tmp_path / "search"


@pytest.fixture(scope="module")
def search(tmp_path_factory, tiny_backbone_name):
    return _Search(tmp_path_factory.mktemp("resume"), tiny_backbone_name)


CHANGES = {
    "batch_size": ({"hm": {"batch_size": 16}}, "batch_size: 32 → 16"),
    "seed": ({"seed": 1}, "seed: 0 → 1"),
    "optimizer": ({"hm": {"optimizer": "sgd"}}, "optimizer: adam → sgd"),
    "activation": ({"hm": {"activation": "sigmoid"}}, "activation: softmax → sigmoid"),
    "space": ({"hm": {"space": {"head_epochs": 1, "dropout": 0.4}}},
              "space['dropout']: float 0.0..0.5 step 0.1 → fixed 0.4"),
    "epochs": ({"epochs": 3}, "epochs: 2 → 3"),
    "tuner": ({"tuner": "bayesian"}, "tuner: random → bayesian"),
    "objective": ({"objective": "val_loss"}, "objective: val_accuracy → val_loss"),
    "data": ({"data": _arrays(shift=1.0)}, "data: arrays: x (64, 16, 16, 3) float32"),
    "weights": ({}, "weights: "),  # another weights file: set in the test
}


@pytest.mark.parametrize("setting", sorted(CHANGES))
def test_resume_refuses_a_changed_setting_and_names_it(search, setting):
    change, shown = CHANGES[setting]
    change = dict(change)
    if setting == "weights":
        change["hm"] = {"weights": str(search.other_weights)}
    before = (search.directory / "kertransfer_search.json").read_text()
    with pytest.raises(SearchError) as e:
        search.run(**change)
    msg = str(e.value)
    assert "holds a different search: 1 setting(s) differ" in msg, msg  # only this one
    assert shown in msg, msg
    assert "another directory" in msg and "overwrite=True" in msg and "--overwrite" in msg
    assert msg.endswith(f"Received: directory={str(search.directory)!r}")
    assert (search.directory / "kertransfer_search.json").read_text() == before


def test_resume_lists_every_changed_setting(search):
    with pytest.raises(SearchError, match=re.escape("3 setting(s) differ")) as e:
        search.run(seed=1, hm={"batch_size": 16, "weights": str(search.other_weights)})
    msg = str(e.value)
    assert "batch_size: 32 → 16" in msg and "seed: 0 → 1" in msg
    digest = re.findall(r"sha256 ([0-9a-f]{16})", msg)
    assert re.search(r"weights: \S+weights_1\.keras \(sha256 \w+\) → "
                     r"\S+weights_2\.keras \(sha256 \w+\)", msg), msg
    assert len(set(digest)) == 2


def test_unchanged_resume_goes_on_and_a_moved_weights_file_is_the_same(search, tmp_path):
    directory = search.copy(tmp_path)
    moved = tmp_path / "moved.keras"
    shutil.copy(search.weights, moved)
    tuner = search.run(directory=directory, max_trials=2, hm={"weights": str(moved)})
    assert [r["trial"] for r in tuner.results] == ["0", "1"]  # the first trial was kept


def test_overwrite_starts_a_changed_search_again(search, tmp_path):
    directory = search.copy(tmp_path)
    search.run(directory=directory, seed=1, overwrite=True)
    search.run(directory=directory, seed=1)  # its record is the new search's
    with pytest.raises(SearchError, match="seed: 1 → 0"):
        search.run(directory=directory)


def _older_record(search, directory, **changes):
    """The record kertransfer wrote before it compared every setting."""
    (x, y), (xv, yv) = _arrays()
    old = {"tuner": "random", "objective": "val_accuracy", "backbones": [search.backbone],
           "num_classes": 4, "input_shape": list(_SHAPE), "space": {"head_epochs": "1"},
           "data": array_digest([x, y, xv, yv]), "epochs": 2}
    old.update(changes)
    (directory / "kertransfer_search.json").write_text(json.dumps(old, indent=2))


def test_an_older_record_lacks_settings_they_are_unknown_not_different(search, tmp_path):
    directory = search.copy(tmp_path)
    _older_record(search, directory)
    search.run(directory=directory, seed=5)  # the seed was not recorded: not compared
    record = json.loads((directory / "kertransfer_search.json").read_text())
    assert record["format"] == 2 and record["seed"] == 5 and record["batch_size"] == 32

    _older_record(search, directory, space={"head_epochs": "2"})
    with pytest.raises(SearchError) as e:
        search.run(directory=directory)
    msg = str(e.value)
    assert "1 setting(s) differ" in msg and "space['head_epochs']: 2 → 1" in msg
    assert re.search(r"older kertransfer, has no value for .*batch_size.*seed.*\(not compared\)",
                     msg), msg
