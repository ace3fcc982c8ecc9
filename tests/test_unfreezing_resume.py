"""A run killed in the middle of stage 3 resumes in stage 3 with the right trainable set."""

import json
import pathlib
import signal
import subprocess
import sys
import time

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parent / "fixtures" / "staged_resume.py"


@pytest.mark.backend_agnostic
def test_killed_run_resumes_in_its_stage(tmp_path):
    child = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path), "--hang-in-epoch", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while not (tmp_path / "hanging").exists():
        if child.poll() is not None or time.time() > deadline:
            child.kill()
            pytest.fail("the child never reached epoch 3: " + child.stdout.read().decode()[-2000:])
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)  # a real kill, mid-epoch, mid-stage
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert not (tmp_path / "done").exists()

    rerun = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert (tmp_path / "done").exists()
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    first, second = [e for e in log if e["pid"] == log[0]["pid"]], \
        [e for e in log if e["pid"] != log[0]["pid"]]
    assert [e["epoch"] for e in first] == [0, 1, 2]
    # The second process starts again at epoch 3 (index 2), in stage 3 (top 2 blocks).
    assert [e["epoch"] for e in second] == [2, 3]
    assert second[0]["trainable"] == first[2]["trainable"]
    assert "block1_conv" in second[0]["trainable"] and "stem_conv" not in second[0]["trainable"]
    assert "stem_conv" in second[1]["trainable"]
