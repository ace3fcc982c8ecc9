"""Data-parallel fine-tuning on CPU devices: examples/data_parallel.py under both engines."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RUN = (f"import runpy, sys; runpy.run_path({str(ROOT / 'tests/fixtures/register_tiny.py')!r}); "
       "sys.argv = sys.argv[:1] + sys.argv[2:]; "
       f"runpy.run_path({str(ROOT / 'examples/data_parallel.py')!r}, run_name='__main__')")


def test_data_parallel_example_mirrors_the_weights_under_tensorflow_and_jax(tmp_path):
    args = ["--cpu-devices", "2", "--backbone", "tiny_test", "--weights", "none",
            "--image-size", "16", "--samples-per-class", "4", "--epochs", "1",
            "--batch-size", "8"]
    runs = {}
    for backend in ("tensorflow", "jax"):
        env = dict(os.environ, KERAS_BACKEND=backend, KT_VERBOSE="0",
                   XLA_FLAGS="--xla_force_host_platform_device_count=2")
        runs[backend] = subprocess.Popen([sys.executable, "-c", RUN, "-", *args], env=env,
                                         cwd=tmp_path, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
    for backend, run in runs.items():
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
        assert f"{backend}: data parallel over 2 devices" in out
        assert "weights on 2 devices" in out, out
