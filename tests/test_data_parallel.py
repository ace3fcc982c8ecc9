"""Data-parallel fine-tuning on CPU devices: examples/data_parallel.py under both engines.

TensorFlow must split its CPU before it first runs, so its run is a child
process; the JAX run of the suite starts with two CPU devices (conftest) and
runs the example in the test process.
"""

import os
import pathlib
import runpy
import subprocess
import sys

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "examples" / "data_parallel.py")
ARGS = ["--cpu-devices", "2", "--backbone", "tiny_test", "--weights", "none", "--image-size",
        "16", "--samples-per-class", "4", "--epochs", "1", "--batch-size", "8"]


def test_data_parallel_example_mirrors_the_weights_under_tensorflow(tmp_path):
    run = (f"import runpy, sys; runpy.run_path({str(ROOT / 'tests/fixtures/register_tiny.py')!r}); "
           f"sys.argv = [{EXAMPLE!r}, *sys.argv[1:]]; runpy.run_path({EXAMPLE!r}, "
           "run_name='__main__')")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", KT_VERBOSE="0")
    done = subprocess.run([sys.executable, "-c", run, *ARGS], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tensorflow: data parallel over 2 devices" in done.stdout
    assert "weights on 2 devices" in done.stdout, done.stdout


@pytest.mark.backend_agnostic
def test_data_parallel_example_shards_the_batches_under_jax(tiny_backbone_name, monkeypatch,
                                                            capsys):
    if keras.backend.backend() != "jax":
        pytest.skip("the JAX run of the suite runs it (two CPU devices from its start)")
    monkeypatch.setattr(sys, "argv", [EXAMPLE, *ARGS])
    monkeypatch.setenv("KT_VERBOSE", "0")
    try:
        runpy.run_path(EXAMPLE, run_name="__main__")
    finally:
        keras.distribution.set_distribution(None)
    out = capsys.readouterr().out
    assert "jax: data parallel over 2 devices" in out
    assert "weights on 2 devices" in out, out
