"""Export for serving: versions, signatures, formats, parity in a fresh process, atomic writes."""

import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.errors import (
    ExportError,
    IncompatibleInputError,
    InvalidArgumentError,
    InvalidTypeError,
    MissingDependencyError,
    ParityError,
)

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the export formats are written under TensorFlow")
NAMES = ["ant", "bee", "cat", "dog"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture
def model(tiny_backbone_name):
    keras.utils.set_random_seed(0)
    return kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3), weights=None)


@pytest.fixture(scope="module")
def served(tiny_backbone_name, tmp_path_factory):
    """``(model, version folder)``: one SavedModel of the tiny model with NAMES, written once
    for the tests that only read it."""
    keras.utils.set_random_seed(0)
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    path = kt.export(model, tmp_path_factory.mktemp("served"), class_names=NAMES, check=False,
                     verbose=0)
    return model, path


def _images(n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3)).astype("float32")


def _two_heads():
    """A functional model with two named heads of different sizes."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, {"digit": keras.layers.Dense(5, activation="softmax",
                                                            name="digit")(x),
                                "parity": keras.layers.Dense(2, activation="softmax",
                                                             name="parity")(x)})


def _meta(path):
    return json.loads((path / "kertransfer_export.json").read_text())


def test_saved_model_versions_signatures_assets_metadata_and_parity(model, tmp_path, capsys):
    first = kt.export(model, tmp_path / "srv", class_names=NAMES)
    out = capsys.readouterr().out
    assert "largest absolute difference: serving_default" in out and "serve_image_bytes" in out
    assert "Captures" not in out and "Saved artifact" not in out  # no Keras variable listing
    second = kt.export(model, tmp_path / "srv", class_names=NAMES, check=False, verbose=0)
    assert (first.name, second.name) == ("1", "2")
    assert sorted(p.name for p in (tmp_path / "srv").iterdir()) == ["1", "2"]  # no temp left
    assert (first / "assets" / "class_names.txt").read_text().split() == NAMES
    meta = _meta(first)
    assert meta["backbone"] == "tiny_test" and meta["input_size"] == [16, 16]
    assert meta["classes"] == NAMES and set(meta["versions"]) == {"kertransfer", "keras",
                                                                    "tensorflow"}
    # The check ran in a process that never imported kertransfer, on both signatures.
    parity = meta["parity"]
    assert parity["kertransfer_imported"] is False and parity["images"] == 4
    assert set(parity["max_abs_diff"]) == {"serving_default", "serve_image_bytes"}
    assert max(parity["max_abs_diff"].values()) <= parity["tolerance"] == 1e-5
    assert _meta(second)["parity"] is None
    loaded = tf.saved_model.load(str(first))
    assert set(loaded.signatures) == {"serving_default", "serve_image_bytes"}
    x = _images()
    out = loaded.signatures["serving_default"](images=tf.constant(x))
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out["class_index"].numpy(), expected.argmax(-1))
    assert [n.decode() for n in out["class_name"].numpy()] == [NAMES[i] for i in
                                                               expected.argmax(-1)]
    # Encoded images of any size are decoded and resized as the data pipeline does.
    big = np.random.default_rng(3).integers(0, 256, (2, 40, 24, 3)).astype("uint8")
    pngs = [tf.io.encode_png(img).numpy() for img in big]
    out = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant(pngs))
    resized = tf.image.resize(big.astype("float32"), (16, 16), antialias=True).numpy()
    np.testing.assert_allclose(out["probabilities"].numpy(),
                               model.predict(np.clip(resized, 0, 255), verbose=0), atol=1e-5)


def test_non_image_bytes_get_an_error_naming_their_positions(served):
    _, path = served
    fn = tf.saved_model.load(str(path)).signatures["serve_image_bytes"]
    png = tf.io.encode_png(_images(1)[0].astype("uint8")).numpy()
    assert fn(image_bytes=tf.constant([png]))["probabilities"].shape == (1, 4)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"(?s)must be encoded images.*positions of the batch.*\[1 2\]"):
        fn(image_bytes=tf.constant([png, b"hello", b"{\"json\": 1}"]))
    # A convolutional model would answer for any size: the signature refuses.
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"(?s)images must have shape \[batch, 16, 16, 3\].*8 8 3"):
        tf.saved_model.load(str(path)).signatures["serving_default"](
            images=tf.zeros((1, 8, 8, 3)))


def test_an_existing_version_is_kept_unless_overwrite(model, tmp_path):
    path = kt.export(model, tmp_path, version=3, check=False, verbose=0)
    stamp = (path / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(InvalidArgumentError, match=r"Version 3 exists.*Received"):
        kt.export(model, tmp_path, version=3, check=False, verbose=0)
    assert (path / "saved_model.pb").stat().st_mtime_ns == stamp
    assert kt.export(model, tmp_path, version=3, overwrite=True, check=False,
                     verbose=0) == path
    assert kt.export(model, tmp_path, check=False, verbose=0).name == "4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3", "4"]


def test_a_failed_write_leaves_no_version_folder(model, tmp_path, monkeypatch):
    class Broken(type(keras.export.ExportArchive())):
        def write_out(self, filepath, *args, **kwargs):
            super().write_out(filepath, *args, **kwargs)  # written, then the disk fills up
            raise RuntimeError("disk full")

    monkeypatch.setattr(keras.export, "ExportArchive", Broken)
    with pytest.raises(RuntimeError, match="disk full"):
        kt.export(model, tmp_path / "srv", verbose=0)
    assert list((tmp_path / "srv").iterdir()) == []


def test_a_parity_failure_fails_the_export_and_writes_nothing(model, tmp_path, monkeypatch):
    import kertransfer.serving.core as core

    real = core.keras_probabilities

    def off_by(model, images):  # the reference drifts by 1e-3 from what Keras computes
        return {k: v + 1e-3 for k, v in real(model, images).items()}

    monkeypatch.setattr(core, "keras_probabilities", off_by)
    monkeypatch.chdir(tmp_path)  # a relative path, as on the command line
    # ONNX: the check's process starts fastest (onnxruntime, no TensorFlow import).
    with pytest.raises(ParityError, match=r"largest absolute difference onnx 0.001"
                                          r".*Nothing was written.*Received: tolerance=0.0001"):
        kt.export(model, "srv", format="onnx", verbose=0)
    assert list((tmp_path / "srv").iterdir()) == []
    # A tolerance that admits the drift lets the same export through.
    path = kt.export(model, "srv", format="onnx", tolerance=2e-3, verbose=0)
    assert abs(_meta(path)["parity"]["max_abs_diff"]["onnx"] - 1e-3) < 1e-6


def test_bad_arguments_are_named_and_nothing_is_written(model, tmp_path):
    cases = [
        (dict(class_names=["a", "b"]), InvalidArgumentError, r"class_names.*4 names.*Received"),
        (dict(version=0), InvalidArgumentError, r"version.*Received: version=0"),
        (dict(format="onxx"), InvalidArgumentError, r"Did you mean 'onnx'.*Received: format"),
        (dict(samples=np.zeros((2, 8, 8, 3))), IncompatibleInputError,
         r"\[n, 16, 16, 3\].*Received: samples.shape=\(2, 8, 8, 3\)"),
        (dict(tolerance=-1), InvalidArgumentError, r"tolerance.*Received: tolerance=-1"),
        (dict(class_names={"digit": NAMES}), InvalidArgumentError, r"4 names.*Received"),
    ]
    for kwargs, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            kt.export(model, tmp_path / "srv", verbose=0, **kwargs)
    with pytest.raises(InvalidTypeError, match=r"Keras model.*Received: model='int'"):
        kt.export(3, tmp_path / "srv")
    with pytest.raises(InvalidArgumentError, match=r"No Keras model there.*Received: model="):
        kt.export(tmp_path / "missing.keras", tmp_path / "srv")
    flat = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2)])
    with pytest.raises(IncompatibleInputError, match=r"fixed-size RGB.*Received"):
        kt.export(flat, tmp_path / "srv")
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidArgumentError, match="path must be a folder"):
        kt.export(model, tmp_path / "file")
    with pytest.raises(InvalidArgumentError, match=r"per head.*\['digit', 'parity'\]"):
        kt.export(_two_heads(), tmp_path / "srv", class_names=NAMES)
    assert not (tmp_path / "srv").exists()


def test_a_missing_converter_names_the_package(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx now fails
    with pytest.raises(MissingDependencyError, match=r"needs tf2onnx.*pip install tf2onnx"):
        kt.export(model, tmp_path / "srv", format="onnx")
    assert not (tmp_path / "srv").exists()


def test_saved_model_cli_show_and_run_read_the_export(served, tmp_path):
    model, path = served
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    shown = subprocess.run(cli + ["show", "--dir", str(path), "--all"], env=ENV,
                           capture_output=True, text=True, check=True).stdout
    assert "signature_def['serve_image_bytes']" in shown and "image_bytes" in shown
    assert "signature_def['serving_default']" in shown and "probabilities" in shown
    x = _images(2)
    np.save(tmp_path / "x.npy", x)
    subprocess.run(cli + ["run", "--dir", str(path), "--tag_set", "serve", "--signature_def",
                          "serving_default", "--inputs", f"images={tmp_path / 'x.npy'}",
                          "--outdir", str(tmp_path / "out")],
                   env=ENV, capture_output=True, text=True, check=True)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "probabilities.npy"),
                               model.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "class_index.npy"),
                                  model.predict(x, verbose=0).argmax(-1))


def test_tflite_export_runs_in_the_litert_interpreter(tiny_backbone_name, tmp_path):
    interpreter_mod = pytest.importorskip("ai_edge_litert.interpreter")
    keras.utils.set_random_seed(0)
    logits = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                     weights=None, activation="logits")
    path = kt.export(logits, tmp_path, format="tflite", class_names=NAMES, verbose=0)
    assert sorted(p.name for p in path.iterdir()) == ["class_names.txt",
                                                      "kertransfer_export.json", "model.tflite"]
    assert _meta(path)["parity"]["max_abs_diff"]["tflite"] <= 1e-4
    runner = interpreter_mod.Interpreter(model_path=str(path / "model.tflite"))
    fn = runner.get_signature_runner("serving_default")
    x = _images(3)
    got = fn(images=x)["probabilities"]
    expected = tf.nn.softmax(logits.predict(x, verbose=0)).numpy()  # logits become probabilities
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    rows = kt.serving.predict(path / "model.tflite", x, top_k=1)  # the file alone works too
    assert [r["predictions"][0]["class"] for r in rows] == [NAMES[i] for i in got.argmax(-1)]


def test_onnx_export_runs_in_onnxruntime_with_every_head(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    two = _two_heads()
    path = kt.export(two, tmp_path, format="onnx", verbose=0,
                     class_names={"digit": list("01234"), "parity": ["even", "odd"]})
    assert _meta(path)["parity"]["max_abs_diff"]["onnx"] <= 1e-4
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert sorted(o.name for o in session.get_outputs()) == ["digit_probabilities",
                                                             "parity_probabilities"]
    x = _images(2)
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, {"images": x})))
    want = two.predict(x, verbose=0)
    np.testing.assert_allclose(got["digit_probabilities"], want["digit"], atol=1e-4)
    np.testing.assert_allclose(got["parity_probabilities"], want["parity"], atol=1e-4)


def test_a_multi_head_saved_model_serves_every_head(tmp_path):
    two = _two_heads()
    names = {"digit": list("01234"), "parity": ["even", "odd"]}
    path = kt.export(two, tmp_path, class_names=names, check=False, verbose=0)
    assert _meta(path)["heads"] == ["digit", "parity"] and _meta(path)["classes"] == names
    out = tf.saved_model.load(str(path)).signatures["serving_default"](
        images=tf.constant(_images(2)))
    assert {"digit_probabilities", "digit_class_name", "parity_probabilities",
            "parity_class_index"} <= set(out)
    want = two.predict(_images(2), verbose=0)
    np.testing.assert_allclose(out["parity_probabilities"].numpy(), want["parity"], atol=1e-5)
    assert [n.decode() for n in out["parity_class_name"].numpy()] == \
        [names["parity"][i] for i in want["parity"].argmax(-1)]
    rows = kt.serving.predict(path, _images(2), top_k=1)
    assert set(rows[0]["predictions"]) == {"digit", "parity"}
    assert rows[0]["predictions"]["parity"][0]["class"] in ("even", "odd")
    assert "head" in kt.serving.format_predictions(rows).splitlines()[0]


def test_keras_format_reloads_to_the_same_outputs(model, tiny_data, tmp_path):
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(*tiny_data[:2], epochs=2, verbose=0)
    path = kt.export(model, tmp_path, format="keras", class_names=NAMES, verbose=0)
    last = _meta(path)["training"]["last_fit"]  # an in-memory model: its last fit
    assert last["epochs"] == 2 and set(last["final"]) == {"loss", "accuracy"}
    assert (path / "class_names.txt").read_text().split() == NAMES
    assert _meta(path)["parity"]["max_abs_diff"]["keras"] <= 1e-5
    again = keras.saving.load_model(path / "model.keras")
    np.testing.assert_allclose(again.predict(_images(), verbose=0),
                               model.predict(_images(), verbose=0), atol=1e-6)


def _pngs(folder, n=3, size=(20, 24)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    files = []
    for i in range(n):
        img = rng.integers(0, 256, (*size, 3)).astype("uint8")
        (folder / f"img{i}.png").write_bytes(tf.io.encode_png(img).numpy())
        files.append(folder / f"img{i}.png")
    return files


def test_predict_agrees_across_a_saved_model_a_keras_run_and_the_cli(model, tmp_path, capsys):
    from kertransfer.cli.main import main
    from kertransfer.training import save_run

    files = _pngs(tmp_path / "photos")
    run = save_run(model, tmp_path / "run", {"class_names": NAMES,
                                            "metrics": {"val_accuracy": 0.5}}, {"loss": [1.0]})
    # The CLI exports the run folder: class names and training record come from it.
    assert main(["export", str(run), "--out", str(tmp_path / "srv"), "--no-check",
                 "--quiet"]) == 0
    version = tmp_path / "srv" / "1"
    assert capsys.readouterr().out.strip() == str(version)
    meta = _meta(version)
    assert meta["classes"] == NAMES and meta["training"]["metrics"] == {"val_accuracy": 0.5}
    served = kt.serving.predict(tmp_path / "srv", [tmp_path / "photos"], top_k=4)
    from_run = kt.serving.predict(run, files, top_k=4)
    assert [r["file"] for r in served] == [str(f) for f in files]
    for a, b in zip(served, from_run):
        assert [p["class"] for p in a["predictions"]] == [p["class"] for p in b["predictions"]]
        np.testing.assert_allclose([p["probability"] for p in a["predictions"]],
                                   [p["probability"] for p in b["predictions"]], atol=1e-5)
        probs = [p["probability"] for p in a["predictions"]]
        assert probs == sorted(probs, reverse=True)
    assert main(["predict", str(version), str(files[0]), "--top-k", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["file", "top-1", "top-2"] and str(files[0]) in table[2]
    assert main(["predict", str(run), str(files[1]), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["file"] == str(files[1]) and len(row["predictions"]) == 3
    assert row["predictions"][0]["class"] in NAMES


def test_a_search_folder_exports_with_its_class_names_and_score(model, tmp_path):
    search = tmp_path / "search"
    search.mkdir()
    model.save(search / "best_model.keras")
    (search / "best_config.json").write_text(json.dumps(
        {"objective": "val_accuracy", "score": 0.75, "values": {"dropout": 0.2},
         "class_names": NAMES}))
    path = kt.export(search, tmp_path / "srv", check=False, verbose=0)
    meta = _meta(path)
    assert meta["classes"] == NAMES and meta["source"] == str(search)
    assert meta["training"] == {"objective": "val_accuracy", "score": 0.75,
                                "values": {"dropout": 0.2}}
    # class_names given explicitly win over the folder's.
    other = kt.export(search, tmp_path / "srv", class_names=list("wxyz"), check=False,
                      verbose=0)
    assert _meta(other)["classes"] == list("wxyz")


def test_predict_errors_name_the_bad_input(served, tmp_path, capsys):
    from kertransfer.cli.main import main
    from kertransfer.errors import CorruptImageError, DataSourceNotFoundError

    _, path = served
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(CorruptImageError, match=r"Received: image=.*notes.png"):
        kt.serving.predict(path, [tmp_path / "notes.png"])
    with pytest.raises(DataSourceNotFoundError, match=r"Received: images=.*nowhere"):
        kt.serving.predict(path, [tmp_path / "nowhere"])
    with pytest.raises(IncompatibleInputError, match=r"\[n, 16, 16, 3\].*Received"):
        kt.serving.predict(path, np.zeros((1, 8, 8, 3)))
    with pytest.raises(InvalidArgumentError, match=r"top_k.*Received: top_k=0"):
        kt.serving.predict(path, _images(1), top_k=0)
    assert main(["predict", str(tmp_path / "nothing"), str(tmp_path / "notes.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


KILLED_EXPORT = """
import pathlib, sys, time
sys.path.insert(0, sys.argv[3])
import register_tiny  # noqa: F401
import keras
import kertransfer as kt

class Slow(type(keras.export.ExportArchive())):
    def write_out(self, filepath, *args, **kwargs):
        super().write_out(filepath, *args, **kwargs)
        pathlib.Path(sys.argv[2]).write_text("written")
        time.sleep(120)  # killed here, with the SavedModel written but not yet renamed

keras.export.ExportArchive = Slow
model = kt.build_transfer_model("tiny_test", 4, input_shape=(16, 16, 3), weights=None)
kt.export(model, sys.argv[1], verbose=0)
"""


def test_a_killed_export_leaves_no_version_and_is_cleaned_up(model, tmp_path):
    fixtures = os.path.join(os.path.dirname(__file__), "fixtures")
    flag = tmp_path / "written"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, str(tmp_path / "srv"),
                             str(flag), fixtures], env=ENV)
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
    assert kt.export(model, tmp_path / "srv", check=False, verbose=0).name == "1"
    assert [p.name for p in (tmp_path / "srv").iterdir()] == ["1"]


def test_export_errors_reach_the_cli(tmp_path, capsys):
    from kertransfer.cli.main import main

    assert main(["export", str(tmp_path / "none"), "--out", str(tmp_path / "srv")]) == 2
    assert "No Keras model there" in capsys.readouterr().err
    assert not (tmp_path / "srv").exists()
    assert issubclass(ParityError, ExportError)


# Sigmoid heads: a one-unit head is binary (negative, positive), several units are multi-label.
def _sigmoid(backbone, units, bias, **kwargs):
    """A sigmoid head whose probabilities are sigmoid(bias) for every image."""
    model = kt.build_transfer_model(backbone, units, input_shape=(16, 16, 3), weights=None,
                                    activation="sigmoid", **kwargs)
    dense = model.get_layer("predictions")
    kernel, b = dense.get_weights()
    dense.set_weights([np.zeros_like(kernel), np.asarray(bias, b.dtype).reshape(b.shape)])
    return model


def _serve(path, x, signature="serving_default"):
    out = tf.saved_model.load(str(path)).signatures[signature](images=tf.constant(x))
    return {k: v.numpy() for k, v in out.items()}


def _decoded(names):
    return np.vectorize(lambda n: n.decode())(names).tolist()


def test_a_one_unit_sigmoid_head_gives_the_positive_class_above_the_threshold(
        tiny_backbone_name, tmp_path):
    sick = _sigmoid(tiny_backbone_name, 1, [3.0])  # p = 0.953 for every image
    x = _images(3)
    path = kt.export(sick, tmp_path / "srv", class_names=["healthy", "sick"], verbose=0)
    out = _serve(path, x)
    np.testing.assert_allclose(out["probabilities"], sick.predict(x, verbose=0), atol=1e-5)
    assert out["class_index"].tolist() == [1, 1, 1]
    assert _decoded(out["class_name"]) == ["sick"] * 3
    png = tf.io.encode_png(x[0].astype("uint8")).numpy()
    by_bytes = tf.saved_model.load(str(path)).signatures["serve_image_bytes"](
        image_bytes=tf.constant([png]))
    assert [n.decode() for n in by_bytes["class_name"].numpy()] == ["sick"]
    meta = _meta(path)
    assert (meta["decision"], meta["threshold"], meta["classes"]) == ("binary", 0.5,
                                                                      ["healthy", "sick"])
    assert max(meta["parity"]["max_abs_diff"].values()) <= 1e-5
    (row, *_) = kt.serving.predict(path, x, top_k=2)
    assert [p["class"] for p in row["predictions"]] == ["sick", "healthy"]
    assert [p["index"] for p in row["predictions"]] == [1, 0]
    np.testing.assert_allclose([p["probability"] for p in row["predictions"]],
                               [0.9526, 0.0474], atol=1e-3)
    # A threshold above p decides the negative class, in the export and in predict.
    strict = kt.export(sick, tmp_path / "srv", class_names=["healthy", "sick"], threshold=0.97,
                       check=False, verbose=0)
    assert _meta(strict)["threshold"] == 0.97
    assert _serve(strict, x)["class_index"].tolist() == [0, 0, 0]
    assert kt.serving.predict(strict, x, top_k=1)[0]["predictions"][0]["class"] == "healthy"
    assert kt.serving.predict(path, x, threshold=0.97)[0]["predictions"][0]["class"] == "healthy"
    # Below 0.5 it is the negative class; without names, "0" and "1".
    healthy = _sigmoid(tiny_backbone_name, 1, [-3.0])
    plain = kt.export(healthy, tmp_path / "srv", check=False, verbose=0)
    out = _serve(plain, x)
    assert out["class_index"].tolist() == [0, 0, 0] and _decoded(out["class_name"]) == ["0"] * 3


def test_sigmoid_heads_decide_the_same_in_tflite_onnx_keras_and_run_folders(
        tiny_backbone_name, tmp_path, capsys):
    from kertransfer.cli.main import main
    from kertransfer.training import save_run

    x = _images(2)
    names = ["healthy", "sick"]
    sick = _sigmoid(tiny_backbone_name, 1, [3.0])
    sources = [kt.export(sick, tmp_path / "k", format="keras", class_names=names, verbose=0),
               save_run(sick, tmp_path / "run", {"class_names": names}, {"loss": [1.0]})]
    formats = [("onnx", "onnxruntime")]
    if importlib.util.find_spec("ai_edge_litert") is not None:
        formats.append(("tflite", "ai_edge_litert"))
    for fmt, _ in formats:
        sources.append(kt.export(sick, tmp_path / fmt, format=fmt, class_names=names,
                                 check=False, verbose=0))
        assert _meta(sources[-1])["decision"] == "binary"
    for source in sources:
        rows = kt.serving.predict(source, x, top_k=1)
        assert [r["predictions"][0]["class"] for r in rows] == ["sick", "sick"], source
        assert kt.serving.predict(source, x, threshold=0.99)[0]["predictions"][0]["class"] \
            == "healthy", source
    files = _pngs(tmp_path / "photos", n=1)
    assert main(["predict", str(sources[1]), str(files[0]), "--json", "--top-k", "1"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["predictions"][0]["class"] == "sick"
    # Several sigmoid units: every class above the threshold, in ONNX as in the SavedModel.
    tags = _sigmoid(tiny_backbone_name, 3, [2.0, -2.0, 1.0])  # p = 0.88, 0.12, 0.73
    onnx = kt.export(tags, tmp_path / "tags", format="onnx", class_names=["cat", "dog", "sun"],
                     check=False, verbose=0)
    rows = kt.serving.predict(onnx, x, top_k=1)  # top_k does not cut a multi-label answer
    assert [p["class"] for p in rows[0]["predictions"]] == ["cat", "sun"]


def test_a_multi_label_head_serves_every_class_above_the_threshold(tiny_backbone_name,
                                                                    tmp_path):
    tags = _sigmoid(tiny_backbone_name, 3, [2.0, -2.0, 1.0])  # p = 0.88, 0.12, 0.73
    names = ["cat", "dog", "sun"]
    x = _images(2)
    path = kt.export(tags, tmp_path / "srv", class_names=names, verbose=0)
    out = _serve(path, x)
    assert out["class_mask"].tolist() == [[True, False, True]] * 2
    assert out["class_index"].tolist() == [[0, 2, -1]] * 2  # most probable first, padded
    assert _decoded(out["class_name"]) == [["cat", "sun", ""]] * 2
    meta = _meta(path)
    assert meta["decision"] == "multi_label" and "class_mask" in meta["outputs"]
    assert max(meta["parity"]["max_abs_diff"].values()) <= 1e-5
    rows = kt.serving.predict(path, x, top_k=1)
    assert [p["class"] for p in rows[0]["predictions"]] == ["cat", "sun"]
    strict = kt.export(tags, tmp_path / "srv", class_names=names, threshold=0.8, check=False,
                       verbose=0)
    out = _serve(strict, x)
    assert out["class_index"].tolist() == [[0, -1, -1]] * 2
    assert _decoded(out["class_name"]) == [["cat", "", ""]] * 2
    # No class above the threshold: an empty answer, shown as "-" in the table.
    rows = kt.serving.predict(path, x, threshold=0.95)
    assert rows[0]["predictions"] == []
    assert kt.serving.format_predictions(rows).splitlines()[2].split() == ["[0]", "-"]


def test_class_names_that_do_not_fit_a_sigmoid_head_are_refused(tiny_backbone_name, tmp_path):
    binary = _sigmoid(tiny_backbone_name, 1, [0.0])
    for given in (["yes"], ["a", "b", "c"]):
        with pytest.raises(InvalidArgumentError,
                           match=r"one sigmoid unit.*takes two names.*negative.*positive"
                                 r".*Received: class_names=\["):
            kt.export(binary, tmp_path / "srv", class_names=given, verbose=0)
    tags = _sigmoid(tiny_backbone_name, 3, [0.0, 0.0, 0.0])
    with pytest.raises(InvalidArgumentError,
                       match=r"sigmoid \(multi-label\) head.*3 names.*Received: class_names="):
        kt.export(tags, tmp_path / "srv", class_names=["a", "b"], verbose=0)
    for threshold, pattern in ((1.5, r"Received: threshold=1.5"), (0, r"Received: threshold=0"),
                               ({"tag": 0.3}, r"not sigmoid heads.*Received: threshold=")):
        with pytest.raises(InvalidArgumentError, match=r"threshold.*" + pattern):
            kt.export(binary, tmp_path / "srv", threshold=threshold, verbose=0)
    with pytest.raises(InvalidArgumentError, match=r"threshold.*Received: threshold=2"):
        kt.serving.predict(tmp_path / "srv", _images(1), threshold=2)
    assert not (tmp_path / "srv").exists()


def test_a_multi_task_model_decides_each_head_by_its_activation(tiny_backbone_name, tmp_path):
    model = kt.build_transfer_model(tiny_backbone_name, {"kind": 3, "flag": 1},
                                    input_shape=(16, 16, 3), weights=None,
                                    activation={"kind": "softmax", "flag": "sigmoid"})
    dense = model.get_layer("flag_predictions")
    kernel, bias = dense.get_weights()
    dense.set_weights([np.zeros_like(kernel), np.zeros_like(bias)])  # p = 0.5 exactly
    names = {"kind": ["ant", "bee", "cat"], "flag": ["off", "on"]}
    x = _images(2)
    want = model.predict(x, verbose=0)["kind"].argmax(-1)
    path = kt.export(model, tmp_path / "srv", class_names=names, check=False, verbose=0)
    out = _serve(path, x)
    assert _decoded(out["flag_class_name"]) == ["off", "off"]  # 0.5 is not above 0.5
    assert _decoded(out["kind_class_name"]) == [names["kind"][i] for i in want]
    low = kt.export(model, tmp_path / "srv", class_names=names, threshold={"flag": 0.3},
                    check=False, verbose=0)
    assert _meta(low)["threshold"] == {"flag": 0.3}
    assert _meta(low)["decision"] == {"kind": "argmax", "flag": "binary"}
    assert _decoded(_serve(low, x)["flag_class_name"]) == ["on", "on"]
    (row, _) = kt.serving.predict(low, x, top_k=1)
    assert row["predictions"]["flag"][0]["class"] == "on"
    assert row["predictions"]["kind"][0]["class"] == names["kind"][want[0]]


def test_a_run_trained_on_a_folder_exports_with_the_folders_class_names(tiny_backbone_name,
                                                                         tmp_path, capsys):
    from PIL import Image

    from kertransfer.cli.main import main
    from kertransfer.training import run_folder, train

    names = ["apple", "banana", "cherry"]
    for k, name in enumerate(names):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(4):
            colour = tuple(int(v) for v in np.roll([200, 40 * i, 0], k))
            Image.new("RGB", (18, 14), colour).save(tmp_path / "photos" / name / f"{i}.png")
    data = kt.data.load(tmp_path / "photos", image_size=(16, 16), batch_size=4,
                        validation_split=0.25, seed=0, verbose=0)
    model = kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(16, 16, 3),
                                    weights=None)
    train(model, data, epochs=1, out=tmp_path / "run", verbose=0)
    assert run_folder.read_class_names(tmp_path / "run") == names
    # kertransfer export RUN, with no --class-names: the folder's names are served.
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "srv"), "--no-check",
                 "--quiet"]) == 0
    version = pathlib.Path(capsys.readouterr().out.strip())
    x, _ = data.as_numpy("train")
    out = _serve(version, x)
    assert _decoded(out["class_name"]) == [names[i] for i in out["probabilities"].argmax(-1)]
    assert set(_decoded(out["class_name"])) <= set(names) and _meta(version)["classes"] == names
    # A multi-task run keeps the names for the heads that keep the folder's labels.
    tasks = data.with_tasks({"fruit": None, "red": [1, 0, 1]})
    multi = kt.build_transfer_model(tiny_backbone_name, tasks.tasks, input_shape=(16, 16, 3),
                                    weights=None)
    train(multi, tasks, epochs=1, out=tmp_path / "multi", verbose=0)
    assert run_folder.read_class_names(tmp_path / "multi") == {"fruit": names}
    path = kt.export(tmp_path / "multi", tmp_path / "srv2", check=False, verbose=0)
    assert _meta(path)["classes"] == {"fruit": names, "red": ["0", "1"]}
