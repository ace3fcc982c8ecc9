"""Real ImageNet weights offline: `kertransfer weights install`, MobileNet v1, Keras' own loader.

MobileNet v1 is converted once per session (about 4 s) from the ``nudity``
package of the offline-weights extra into a temporary ``KERAS_HOME`` (the
``installed`` and ``keras_home`` fixtures of ``conftest.py``).
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import warnings

import keras
import numpy as np
import pytest
from conftest import offline as _offline

import kertransfer as kt
from kertransfer.errors import (
    InvalidArgumentError,
    MissingDependencyError,
    UnknownBackboneError,
    WeightsConversionError,
    WeightsError,
    WeightsNotFoundError,
)
from kertransfer.models.imagenet import checks, install, mobilenet_v1
from kertransfer.models.imagenet import construct as construct_module

NO_TOP, TOP = "mobilenet_1_0_224_tf_no_top.h5", "mobilenet_1_0_224_tf.h5"


def test_conversion_matches_the_original_graph_and_classifies_the_photos(installed):
    _, report = installed
    assert report["status"] == "installed" and report["name"] == "mobilenet"
    assert sorted(f["file"] for f in report["files"]) == sorted([NO_TOP, TOP])
    photos = report["checks"]["photos"]
    assert photos["chelsea"]["top1"] == 285 and photos["chelsea"]["probability"] > 0.9
    assert photos["coffee"]["top1"] == 967 and photos["coffee"]["probability"] > 0.95
    assert report["checks"]["graph_logits"]["max_abs_diff"] < 1e-4
    assert report["checks"]["graph_features"]["max_abs_diff"] < 1e-3
    assert report["source"].startswith("nudity 0.2.3")


def test_keras_own_loader_reads_the_files_in_a_fresh_offline_process(installed):
    home, _ = installed
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('no network in this test')\n"
        "socket.socket.connect = refuse; socket.getaddrinfo = refuse\n"
        "import numpy as np, keras\n"
        "from kertransfer.models.imagenet import checks\n"
        "names, x = checks.photo_batch((224, 224))\n"
        "x = keras.applications.mobilenet.preprocess_input(x)\n"
        "top = keras.applications.MobileNet(weights='imagenet')\n"
        "notop = keras.applications.MobileNet(weights='imagenet', include_top=False,\n"
        "                                     input_shape=(224, 224, 3))\n"
        "print(dict(zip(names, top.predict(x, verbose=0).argmax(-1).tolist())),\n"
        "      notop.output_shape)\n"
    )
    env = {**os.environ, "KERAS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "{'chelsea': 285, 'coffee': 967} (None, 7, 7, 1024)" in out.stdout


def test_build_transfer_model_loads_them_at_every_size_saying_so_once(keras_home, capsys,
                                                                     monkeypatch):
    import h5py

    monkeypatch.setattr(construct_module, "_ANNOUNCED", set())

    with h5py.File(keras_home / "models" / NO_TOP, "r") as f:
        kernel = f["conv_pw_13"]["conv_pw_13/kernel:0"][()]
    for size in (96, 96, 128, 128, 224):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = kt.build_transfer_model("mobilenet", 3, input_shape=(size, size, 3))
        assert not [w for w in caught if "will be loaded as the default" in str(w.message)]
        np.testing.assert_array_equal(model.backbone.get_layer("conv_pw_13").get_weights()[0],
                                      kernel)
    out = capsys.readouterr().out
    assert out.count("mobilenet at 96x96 uses the ImageNet weights of " + NO_TOP) == 1
    assert out.count("mobilenet at 128x128 uses the ImageNet weights of " + NO_TOP) == 1
    assert "mobilenet_1_0_128_tf_no_top.h5 is not in" in out
    assert "224x224 uses" not in out


def test_the_imagenet_classifier_through_kertransfer_preprocessing(keras_home):
    names, photos = checks.photo_batch((224, 224))
    model = kt.build_transfer_model("mobilenet", 3, input_shape=(224, 224, 3))
    features = keras.Sequential([model.get_layer("preprocess"), model.backbone])
    top = keras.applications.MobileNet(weights=None, classifier_activation=None)
    top.load_weights(keras_home / "models" / TOP)
    reference = keras.Model(top.input, top.get_layer("conv_pw_13_relu").output)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(features(photos)),
                               keras.ops.convert_to_numpy(reference(photos / 127.5 - 1)),
                               atol=1e-4)
    assert names == ["chelsea", "coffee"]


@pytest.mark.parametrize("size", [128, 96])
def test_nothing_installed_names_the_install_command(tmp_path, monkeypatch, size):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    _offline(monkeypatch)
    with pytest.raises(WeightsNotFoundError) as e:
        kt.build_transfer_model("mobilenet", 3, input_shape=(size, size, 3))
    msg = str(e.value)
    assert "Run `kertransfer weights install mobilenet`" in msg
    assert "build_transfer_model('mobilenet')" not in msg  # the old advice, wrong at 128
    assert "(OSError: URL fetch failure: this test has no network)" in msg  # the whole cause
    expected = "mobilenet_1_0_128_tf_no_top.h5" if size == 128 else NO_TOP
    assert f"Expected the file {expected} at {tmp_path / 'models' / expected}" in msg
    if size == 128:
        assert f"or {NO_TOP} (used at every size)" in msg
    assert msg.endswith("Received: backbone='mobilenet', weights='imagenet'")


def test_a_family_without_converter_names_keras_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    _offline(monkeypatch)
    with pytest.raises(WeightsNotFoundError) as e:
        kt.build_transfer_model("mobilenet_v3_small", 3, input_shape=(32, 32, 3))
    msg = str(e.value)
    assert "weights install" not in msg
    assert "Download https://" in msg and "weights_mobilenet_v3_small" in msg
    assert str(tmp_path / "models") in msg


def test_a_damaged_cached_file_is_named_with_the_fix(installed, tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / NO_TOP).write_bytes(b"not hdf5")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    _offline(monkeypatch)
    with pytest.raises(WeightsError, match=r"does not load.*weights install mobilenet --force"):
        kt.build_transfer_model("mobilenet", 3, input_shape=(224, 224, 3))


def test_install_is_idempotent_and_listed(installed, capsys):
    home, _ = installed
    folder = home / "models"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    t0 = time.monotonic()
    again = kt.models.install_weights("mobilenet", cache_dir=folder)
    assert again["status"] == "already installed" and time.monotonic() - t0 < 2
    assert "already installed" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    rows = kt.models.installed_weights(folder)
    assert [(r["backbone"], r["file"], r["status"]) for r in rows] == [
        ("mobilenet", TOP, "ok"), ("mobilenet", NO_TOP, "ok")]
    assert all(r["size"] > 10e6 and r["source"].startswith("nudity") for r in rows)
    assert not [p for p in folder.iterdir() if p.name.startswith(install._TMP_PREFIX)]


def test_a_changed_file_is_reinstalled_and_a_keras_download_is_kept(installed, tmp_path):
    home, _ = installed
    folder = tmp_path / "models"
    shutil.copytree(home / "models", folder)
    with open(folder / TOP, "r+b") as f:  # damaged after the install
        f.truncate(1000)
    assert {r["file"]: r["status"] for r in install.installed_weights(folder)}[TOP] == "changed"
    # A file of the same name and layout that kertransfer did not install (a Keras download)
    # is left in place.
    manifest = json.loads((folder / install.MANIFEST).read_text())
    del manifest["mobilenet"]["files"][NO_TOP]
    (folder / install.MANIFEST).write_text(json.dumps(manifest))
    stamp = (folder / NO_TOP).stat().st_mtime_ns
    report = install.install_weights("mobilenet", cache_dir=folder, verbose=0)
    kept = {f["file"]: f["kept"] for f in report["files"]}
    assert report["status"] == "installed" and kept == {NO_TOP: True, TOP: False}
    assert (folder / NO_TOP).stat().st_mtime_ns == stamp
    assert {r["status"] for r in install.installed_weights(folder)} == {"ok"}


def _fake_converter(fail: BaseException):
    def convert(destination_dir, *, name, verbose):
        (destination_dir / "fake_weights.h5").write_bytes(b"half a file")
        raise fail
    return convert


def test_a_failed_install_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(install.CONVERTERS, "mobilenet",
                        _fake_converter(WeightsConversionError("a check failed")))
    with pytest.raises(WeightsConversionError, match="a check failed"):
        install.install_weights("mobilenet", cache_dir=tmp_path, verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [install._LOCK]
    assert install.installed_weights(tmp_path) == []


def test_a_failed_check_fails_the_real_conversion(tmp_path, monkeypatch):
    monkeypatch.setitem(checks.EXPECTED, "coffee", (504,))  # coffee mug: not what it shows
    with pytest.raises(WeightsConversionError, match=r"misclassify the sample photos.*coffee"):
        install.install_weights("mobilenet", cache_dir=tmp_path, verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [install._LOCK]


KILLED_INSTALL = """
import pathlib, sys, time
from kertransfer.models.imagenet import install

def convert(destination_dir, *, name, verbose):
    (destination_dir / "mobilenet_1_0_224_tf.h5").write_bytes(b"half a file")
    pathlib.Path(sys.argv[2]).write_text("written")
    time.sleep(120)  # killed here

install.CONVERTERS["mobilenet"] = convert
install.install_weights("mobilenet", cache_dir=sys.argv[1], verbose=0)
"""


def test_a_killed_install_leaves_nothing_under_keras_names(tmp_path, monkeypatch):
    flag = tmp_path / "written"
    folder = tmp_path / "models"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_INSTALL, str(folder), str(flag)],
                            env=env)
    deadline = time.monotonic() + 120
    while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert flag.exists(), "the install never reached its write"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = [p.name for p in folder.iterdir()]
    assert TOP not in left and install.MANIFEST not in left
    assert [n for n in left if n.startswith(install._TMP_PREFIX)]  # hidden, never read
    # The next install removes the dead process's temporary folder.
    monkeypatch.setitem(install.CONVERTERS, "mobilenet",
                        _fake_converter(WeightsConversionError("stop")))
    with pytest.raises(WeightsConversionError):
        install.install_weights("mobilenet", cache_dir=folder, verbose=0)
    assert sorted(p.name for p in folder.iterdir()) == [install._LOCK]


def test_names_are_checked():
    with pytest.raises(UnknownBackboneError, match="Unknown backbone 'mobilenett'"):
        install.install_weights("mobilenett", verbose=0)
    with pytest.raises(InvalidArgumentError, match="no offline converter for 'resnet50'"):
        install.install_weights("resnet50", verbose=0)
    assert install.install_command("mobilenet") == "kertransfer weights install mobilenet"
    assert install.install_command("resnet50") is None
    assert set(install.CONVERTERS) <= set(kt.list_backbones())


def test_a_missing_source_package_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nudity" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r'pip install -e "\.\[offline-weights\]"'):
        mobilenet_v1.graph_path()


def test_backbones_reexport_without_importing_models():
    import ast

    assert kt.models.install_weights is install.install_weights
    assert kt.models.installed_weights is install.installed_weights
    # The layer rule: no backbones module imports the models layer when it is imported.
    for path in pathlib.Path(kt.backbones.__file__).parent.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("kertransfer.models"), path.name
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("kertransfer.models") for a in node.names)


def test_legacy_h5_writer_round_trips_through_keras(tmp_path):
    from kertransfer.models.imagenet.legacy_h5 import write_legacy_h5

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    source = keras.Model(inputs, x)
    for w in source.weights:
        w.assign(np.random.default_rng(0).normal(size=w.shape).astype("float32"))
    write_legacy_h5(source, tmp_path / "w.h5")
    target = keras.models.clone_model(source)
    target.load_weights(tmp_path / "w.h5")
    for a, b in zip(source.get_weights(), target.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_cli_install_and_list(keras_home, capsys):
    from kertransfer.cli import main

    assert main(["weights", "install", "mobilenet"]) == 0
    assert "already installed" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert f"mobilenet  {TOP}" in out and "ok" in out and str(keras_home / "models") in out
    assert "Installable offline" in out and "mobilenet" in out
    assert main(["weights", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {r["file"] for r in listed["files"]} == {TOP, NO_TOP}
    assert main(["weights", "install", "mobilenett"]) == 2
    assert "Unknown backbone 'mobilenett'" in capsys.readouterr().err
    assert main(["weights", "install", "mobilenet", "--verbose", "0"]) == 0
    assert capsys.readouterr().out == ""


def test_keras_cache_dir_reads_keras_home_when_called(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert construct_module.keras_cache_dir() == pathlib.Path(tmp_path) / "models"
    assert install.cache_folder() == pathlib.Path(tmp_path) / "models"
