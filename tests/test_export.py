"""SavedModel export for TF Serving: versions, signatures, parity, atomic writes."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.errors import InvalidArgumentError, InvalidTypeError
from kertransfer.export import export_saved_model

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="SavedModel export runs under the TensorFlow backend")
NAMES = ["ant", "bee", "cat", "dog"]


@pytest.fixture
def model(tiny_backbone_name):
    keras.utils.set_random_seed(0)
    return kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3), weights=None)


def _images(n=3):
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3)).astype("float32")


def test_versions_signatures_assets_and_metadata(model, tmp_path, capsys):
    first = export_saved_model(model, tmp_path / "srv", class_names=NAMES)
    second = export_saved_model(model, tmp_path / "srv", class_names=NAMES)
    assert (first.name, second.name) == ("1", "2")
    assert "Exported SavedModel version 1" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "srv").iterdir()) == ["1", "2"]  # no temp left
    assert (first / "assets" / "class_names.txt").read_text().split() == NAMES
    meta = json.loads((first / "kertransfer_export.json").read_text())
    assert meta["backbone"] == "tiny_test" and meta["input_size"] == [16, 16]
    assert meta["classes"] == NAMES and set(meta["versions"]) == {"kertransfer", "keras",
                                                                    "tensorflow"}
    loaded = tf.saved_model.load(str(first))
    assert set(loaded.signatures) == {"serving_default", "serve_image_bytes"}
    x = _images()
    out = loaded.signatures["serving_default"](images=tf.constant(x))
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out["class_index"].numpy(), expected.argmax(-1))
    assert [n.decode() for n in out["class_name"].numpy()] == [NAMES[i] for i in
                                                               expected.argmax(-1)]
    # Encoded images of the same pixels give the same answer.
    pngs = [tf.io.encode_png(tf.constant(img.astype("uint8"))).numpy() for img in x]
    out = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant(pngs))
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)


def test_an_existing_version_is_kept_unless_overwrite(model, tmp_path):
    path = export_saved_model(model, tmp_path, version=3, verbose=0)
    stamp = (path / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(InvalidArgumentError, match=r"Version 3 exists.*Received"):
        export_saved_model(model, tmp_path, version=3, verbose=0)
    assert (path / "saved_model.pb").stat().st_mtime_ns == stamp
    assert export_saved_model(model, tmp_path, version=3, overwrite=True, verbose=0) == path
    assert export_saved_model(model, tmp_path, verbose=0).name == "4"


def test_a_failed_export_leaves_no_version_folder(model, tmp_path, monkeypatch):
    class Broken(type(keras.export.ExportArchive())):
        def write_out(self, filepath, *args, **kwargs):
            super().write_out(filepath, *args, **kwargs)  # written, then the disk fills up
            raise RuntimeError("disk full")

    monkeypatch.setattr(keras.export, "ExportArchive", Broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_saved_model(model, tmp_path / "srv", verbose=0)
    assert list((tmp_path / "srv").iterdir()) == []


def test_bad_arguments_are_named(model, tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"class_names.*4 names.*Received"):
        export_saved_model(model, tmp_path, class_names=["a", "b"])
    with pytest.raises(InvalidArgumentError, match=r"version.*Received: version=0"):
        export_saved_model(model, tmp_path, version=0)
    with pytest.raises(InvalidTypeError, match=r"Keras model.*Received: model='str'"):
        export_saved_model("model.keras", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_saved_model_cli_and_plain_tensorflow_read_the_export(model, tmp_path):
    path = export_saved_model(model, tmp_path, class_names=NAMES, verbose=0)
    shown = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli",
                            "show", "--dir", str(path), "--all"],
                           capture_output=True, text=True, check=True).stdout
    assert "signature_def['serve_image_bytes']" in shown and "image_bytes" in shown
    assert "signature_def['serving_default']" in shown and "probabilities" in shown
    x = _images(2)
    np.save(tmp_path / "x.npy", x)
    code = ("import numpy as np, tensorflow as tf, sys\n"
            "m = tf.saved_model.load(sys.argv[1])\n"
            "out = m.signatures['serving_default'](images=tf.constant(np.load(sys.argv[2])))\n"
            "np.save(sys.argv[3], out['probabilities'].numpy())\n"
            "assert 'kertransfer' not in sys.modules\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, env=env)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0),
                               atol=1e-5)


KILLED_EXPORT = """
import pathlib, sys, time
sys.path.insert(0, sys.argv[3])
import register_tiny  # noqa: F401
import keras
import kertransfer as kt
from kertransfer.export import export_saved_model

class Slow(type(keras.export.ExportArchive())):
    def write_out(self, filepath, *args, **kwargs):
        super().write_out(filepath, *args, **kwargs)
        pathlib.Path(sys.argv[2]).write_text("written")
        time.sleep(120)  # killed here, with the SavedModel written but not yet renamed

keras.export.ExportArchive = Slow
model = kt.build_transfer_model("tiny_test", 4, input_shape=(16, 16, 3), weights=None)
export_saved_model(model, sys.argv[1], verbose=0)
"""


def test_a_killed_export_leaves_no_version_and_is_cleaned_up(model, tmp_path):
    import signal
    import time

    fixtures = os.path.join(os.path.dirname(__file__), "fixtures")
    flag = tmp_path / "written"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, str(tmp_path / "srv"),
                             str(flag), fixtures], env=env)
    deadline = time.monotonic() + 120
    while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert flag.exists(), "the export never reached its write"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = [p.name for p in (tmp_path / "srv").iterdir()]
    assert not any(name.isdigit() for name in left)  # TF Serving sees no version
    assert any(name.startswith(".partial-") for name in left)
    # The next export takes version 1 and removes the dead process's partial folder.
    assert export_saved_model(model, tmp_path / "srv", verbose=0).name == "1"
    assert [p.name for p in (tmp_path / "srv").iterdir()] == ["1"]
