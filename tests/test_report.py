"""Confusion matrices, per-class accuracy and the run report."""

import json

import numpy as np
import pytest

import kertransfer as kt
from kertransfer.errors import DataError, LabelError
from kertransfer.insight.report import (
    confusion_matrix,
    evaluate_run,
    per_class_accuracy,
    plot_confusion_matrix,
    run_report,
)

agnostic = pytest.mark.backend_agnostic


@agnostic
def test_confusion_matrix_and_per_class_accuracy_on_a_hand_case(tmp_path):
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 0, 1, 1, 0])
    m = confusion_matrix(y_true, y_pred, num_classes=4)
    np.testing.assert_array_equal(m, [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    acc = per_class_accuracy(m)
    np.testing.assert_allclose(acc[:3], [2 / 3, 1.0, 0.0])
    assert np.isnan(acc[3])  # no example of class 3: no accuracy, not 0
    path = plot_confusion_matrix(m, ["a", "b", "c", "d"], tmp_path / "cm.png")
    assert path.stat().st_size > 0 and [p.name for p in tmp_path.iterdir()] == ["cm.png"]
    with pytest.raises(LabelError, match=r"same length.*Received"):
        confusion_matrix(y_true, y_pred[:3])
    with pytest.raises(LabelError, match=r"below num_classes=2"):
        confusion_matrix(y_true, y_pred, num_classes=2)


def test_a_run_report_gathers_curves_stages_matrix_and_trials(tiny_backbone_name, tiny_data,
                                                              tmp_path):
    from kertransfer.training import train

    data = kt.data.load(tiny_data, image_size=(16, 16), validation_split=0.2, test_split=0.2,
                        seed=0, verbose=0)
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    run = train(model, data, epochs=2, verbose=0, out=tmp_path / "run",
                config={"stages": [[0, "head"], [1, "fine-tune (all blocks)"]]}).out
    result = evaluate_run(run, data)
    x, y = data.as_numpy("test")
    assert result["matrix"].sum() == len(y)
    want = np.mean(model.predict(x, verbose=0).argmax(-1) == y)
    assert result["accuracy"] == pytest.approx(want)
    np.testing.assert_allclose(np.nansum(result["per_class"] * result["matrix"].sum(axis=1)),
                               np.trace(result["matrix"]))
    page = run_report(run, data).read_text()
    for text in ("Summary", "Learning curves", "epoch 2: fine-tune (all blocks)",
                 "Confusion matrix (test split)", "Accuracy per class", "data:image/png;base64"):
        assert text in page, text
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary left
    # A search folder: its trials plot and results table.
    search = tmp_path / "search"
    search.mkdir()
    from kertransfer.tuning.results import plot_trials

    rows = [{"status": "COMPLETED", "score": 0.5, "backbone": "b", "unfreeze_top": 1,
             "fine_tune_learning_rate": 1e-4}]
    plot_trials(rows, search / "trials.png", "val_accuracy")
    (search / "results.csv").write_text("trial,score\n0,0.5\n")
    (search / "best_config.json").write_text(json.dumps({"objective": "val_accuracy",
                                                         "score": 0.5}))
    page = run_report(search, out=tmp_path / "search.html").read_text()
    assert "Search trials" in page and "<td>0.5</td>" in page
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"nothing to report.*Received"):
        run_report(empty)


def _sigmoid_run(tiny_backbone_name, tmp_path, units, class_names=None):
    """A run folder with a sigmoid head of ``units`` units, and 40 images."""
    model = kt.build_transfer_model(tiny_backbone_name, units, activation="sigmoid",
                                    input_shape=(16, 16, 3), weights=None)
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    if class_names is not None:
        (run / "config.json").write_text(json.dumps({"class_names": class_names}))
    x = np.random.default_rng(0).uniform(0, 255, (40, 16, 16, 3)).astype("float32")
    return run, model, x, model.predict(x, verbose=0)


def test_a_binary_sigmoid_head_is_reported_as_negative_and_positive(tiny_backbone_name,
                                                                    tmp_path):
    run, model, x, probs = _sigmoid_run(tiny_backbone_name, tmp_path, 1, ["no", "yes"])
    p = probs[:, 0]
    threshold = float(np.median(p))  # both classes are predicted
    y = (np.arange(40) % 2)[:, None]  # [N, 1], as a sigmoid head is trained on
    # The default threshold is 0.5, as in the exports (argmax over one unit said 0).
    default = evaluate_run(run, (x, y[:, 0]), model=model)
    np.testing.assert_array_equal(default["matrix"], confusion_matrix(
        y[:, 0], (p > 0.5).astype("int64"), num_classes=2))
    result = evaluate_run(run, (x, y), threshold=threshold)
    want = confusion_matrix(y[:, 0], (p > threshold).astype("int64"), num_classes=2)
    assert result["rule"] == "binary" and result["matrix"].shape == (2, 2)
    np.testing.assert_array_equal(result["matrix"], want)
    assert 0 < result["matrix"][:, 1].sum() < 40  # not argmax over one unit: always 0
    assert result["accuracy"] == pytest.approx(np.mean((p > threshold) == y[:, 0]))
    assert result["class_names"] == ["no", "yes"]
    assert [q.name for q in result["paths"]] == ["confusion_matrix.png",
                                                  "per_class_accuracy.png"]
    page = run_report(run, (x, y), threshold=threshold).read_text()
    assert "Confusion matrix" in page and f"threshold {threshold:g}" in page
    with pytest.raises(kt.errors.InvalidArgumentError, match=r"between 0 and 1.*Received"):
        evaluate_run(run, (x, y), threshold=1.5)


def test_a_multi_label_head_is_reported_per_label(tiny_backbone_name, tmp_path):
    run, _, x, probs = _sigmoid_run(tiny_backbone_name, tmp_path, 3, ["cat", "dog", "sky"])
    y = np.random.default_rng(1).integers(0, 2, (40, 3))
    result = evaluate_run(run, (x, y))
    decided = probs > 0.5
    assert result["rule"] == "multi_label" and result["matrix"].shape == (3, 2, 2)
    for j in range(3):
        np.testing.assert_array_equal(result["matrix"][j], confusion_matrix(
            y[:, j], decided[:, j].astype("int64"), num_classes=2))
    np.testing.assert_allclose(result["per_class"], np.mean(decided == y, axis=0))
    assert result["accuracy"] == pytest.approx(np.mean(decided == y))
    assert result["class_names"] == ["cat", "dog", "sky"]
    assert [q.name for q in result["paths"]] == ["per_class_accuracy.png"]
    assert not (run / "confusion_matrix.png").exists()  # no label-by-label matrix
    page = run_report(run, (x, y)).read_text()
    assert "Accuracy per label" in page and "Confusion matrix" not in page
    with pytest.raises(LabelError, match=r"multi-hot.*shape \(40, 3\).*Received"):
        evaluate_run(run, (x, np.arange(40) % 3))  # class indices, not multi-hot labels
