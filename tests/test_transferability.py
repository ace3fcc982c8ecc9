"""Transferability scores against their definitions on small, hand-checked cases."""

import numpy as np
import pytest

from kertransfer.errors import DataError, LabelError
from kertransfer.insight.scores import h_score, leep, logme, logme_evidence

agnostic = pytest.mark.backend_agnostic


def _labels(n=60, classes=3, seed=0):
    return np.random.default_rng(seed).permutation(np.arange(n) % classes)


@pytest.mark.parametrize("dims", [5, 80])  # fewer and more features than examples
@agnostic
def test_logme_maximises_the_gaussian_evidence_of_each_label_column(dims):
    rng = np.random.default_rng(dims)
    y = _labels()
    f = rng.normal(size=(60, dims)) + 0.8 * np.eye(3)[y] @ rng.normal(size=(3, dims))
    value, details = logme(f, y, return_details=True)
    assert value == pytest.approx(np.mean(details["per_class"]))
    for k, (a, b, score) in enumerate(zip(details["alpha"], details["beta"],
                                          details["per_class"])):
        column = (y == k).astype(float)
        # The closed form LogME evaluates equals the direct N x N Gaussian formula...
        assert score == pytest.approx(logme_evidence(f, column, a, b), rel=1e-6)
        # ...at the precisions that maximise it.
        for scale in (0.5, 2.0):
            assert logme_evidence(f, column, a * scale, b) < score
            assert logme_evidence(f, column, a, b * scale) < score


@agnostic
def test_logme_ranks_label_features_above_random_ones():
    rng = np.random.default_rng(1)
    y = _labels(90, 3)
    onehot = np.eye(3)[y] + rng.normal(0, 0.05, (90, 3))
    noise = rng.normal(size=(90, 3))
    assert logme(onehot, y) > logme(noise, y)
    # Informative directions hidden among noise still beat noise alone.
    assert logme(np.hstack([onehot, rng.normal(size=(90, 20))]), y) > \
        logme(rng.normal(size=(90, 23)), y)


@agnostic
def test_leep_on_a_hand_computed_case():
    theta = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    y = np.array([0, 1, 1])
    # P(y, z) = [[1/3, 0], [1/6, 1/2]], P(y | z) = [[2/3, 0], [1/3, 1]];
    # the examples' expected predictions of their labels: 2/3, 1, 2/3.
    assert leep(theta, y) == pytest.approx(2 / 3 * np.log(2 / 3), rel=1e-12)
    # A source head that already separates the target's classes scores 0, the maximum.
    y = _labels(30, 3)
    assert leep(np.eye(4)[y], y) == pytest.approx(0.0, abs=1e-12)
    uniform = np.full((30, 4), 0.25)
    assert leep(uniform, y) == pytest.approx(np.log(1 / 3))  # no information: the prior
    with pytest.raises(DataError, match=r"probabilities.*softmax.*Received"):
        leep(np.log(uniform), y)


@agnostic
def test_h_score_of_label_features_is_the_number_of_classes_minus_one():
    y = _labels(60, 4)
    assert h_score(np.eye(4)[y], y, shrinkage=False) == pytest.approx(3.0)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(60, 4))
    assert h_score(noise, y, shrinkage=False) < 0.5
    # Features that outnumber the examples saturate the plain score at its maximum;
    # shrinkage keeps informative features above noise.
    wide_noise = rng.normal(size=(60, 200))
    wide_signal = wide_noise.copy()
    wide_signal[:, :4] += 3 * np.eye(4)[y]
    assert h_score(wide_noise, y, shrinkage=False) == pytest.approx(3.0)
    assert h_score(wide_signal, y) > 2 * h_score(wide_noise, y)
    assert h_score(wide_signal, y) < 3.0
    # The score, computed in the features' span, equals the 200 x 200 definition.
    from sklearn.covariance import ledoit_wolf_shrinkage

    f = wide_signal - wide_signal.mean(axis=0)
    a = ledoit_wolf_shrinkage(f, assume_centered=True)
    means = np.stack([f[y == k].mean(axis=0) for k in y])
    cov_f = (1 - a) * f.T @ f / 60 + a * np.mean(f * f) * np.eye(200)
    want = np.trace(np.linalg.pinv(cov_f) @ ((1 - a) * means.T @ means / 60))
    assert h_score(wide_signal, y) == pytest.approx(want, rel=1e-6)


@agnostic
def test_wide_features_score_from_their_gram_matrix_as_from_the_matrix_itself(monkeypatch):
    from kertransfer.insight import scores as transferability

    # Pixel-like float32 features (0-255, far from centred), wider than long, read in
    # 48-column blocks: 4 blocks and a remainder.
    monkeypatch.setattr(transferability, "_BLOCK", 48)
    rng = np.random.default_rng(3)
    y = _labels(60, 4)
    f = rng.integers(0, 256, (60, 200)).astype("float32")
    f[:, :4] += 60 * np.eye(4, dtype="float32")[y]
    wide = transferability._Features(f)
    direct = transferability._Features(f.astype("float64"))
    direct.wide = False  # the SVD of the [60, 200] matrix and scikit-learn's Ledoit-Wolf
    assert wide.wide
    assert transferability._logme(wide, y) == pytest.approx(transferability._logme(direct, y),
                                                            rel=1e-9)
    for shrinkage in (True, False):
        assert transferability._h_score(wide, y, shrinkage) == pytest.approx(
            transferability._h_score(direct, y, shrinkage), rel=1e-7)
    assert logme(f, y) == pytest.approx(transferability._logme(direct, y), rel=1e-9)
    # Rank-deficient wide features (repeated rows): rounding is not taken for variance.
    g = np.repeat(f[:20], 3, axis=0)
    assert h_score(g, y, shrinkage=False) <= 3.0 + 1e-9


@agnostic
def test_bad_inputs_are_named():
    with pytest.raises(DataError, match=r"2-D.*Received: features='shape \(5,\)'"):
        logme(np.zeros(5), np.zeros(5, int))
    with pytest.raises(LabelError, match=r"one integer class label.*Received"):
        h_score(np.zeros((5, 2)), np.zeros(4, int))
    with pytest.raises(LabelError, match=r"two classes"):
        logme(np.ones((5, 2)), np.zeros(5, int))
    with pytest.raises(DataError, match=r"NaN"):
        logme(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]))


def test_rank_backbones_scores_every_candidate_once_best_first(tiny_backbone_name, tmp_path,
                                                                capsys):
    import keras

    import kertransfer as kt
    from kertransfer.errors import InvalidArgumentError

    # Images whose class is the brightness of one quadrant: pixels carry the label.
    rng = np.random.default_rng(0)
    y = _labels(80, 4)
    x = rng.uniform(0, 60, (80, 16, 16, 3)).astype("float32")
    for k in range(4):
        r, c = divmod(k, 2)
        x[y == k, 8 * r:8 * r + 8, 8 * c:8 * c + 8] += 150
    source = kt.build_transfer_model(tiny_backbone_name, 5, input_shape=(16, 16, 3),
                                     weights=None)
    source.save(tmp_path / "source.keras")
    noise = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Lambda(
        lambda t: keras.random.normal((keras.ops.shape(t)[0], 8), seed=1))], name="noise")
    ranking = kt.rank_backbones(
        {"pixels": "pixels", "noise": noise, "tiny random": (tiny_backbone_name, None),
         "tiny file": str(tmp_path / "source.keras")}, (x, y), verbose=1)
    rows = {r["candidate"]: r for r in ranking.rows}
    assert ranking.metric == "logme" and ranking.examples == 80 and ranking.classes == 4
    logmes = [r["logme"] for r in ranking.rows]
    assert logmes == sorted(logmes, reverse=True)  # best first
    assert rows["pixels"]["logme"] > rows["noise"]["logme"]
    assert rows["pixels"]["dim"] == 16 * 16 * 3 and rows["noise"]["dim"] == 8
    # LEEP needs a source head: only the saved transfer model has one.
    assert rows["tiny file"]["leep"] is not None and rows["tiny file"]["leep"] <= 0
    assert all(rows[n]["leep"] is None for n in ("pixels", "noise", "tiny random"))
    # Every metric read the candidate's one feature pass: pixels' are the flat inputs.
    assert rows["pixels"]["hscore"] == pytest.approx(h_score(x.reshape(80, -1) / 255.0, y))
    printed = capsys.readouterr().out
    assert "Ranked by logme on 80 examples of 4 classes" in printed and ranking.best in printed
    with pytest.raises(InvalidArgumentError, match=r"metrics.*Received: metrics=\['logm'\]"):
        kt.rank_backbones(["pixels"], (x, y), metrics=["logm"])
    source.backbone.save(tmp_path / "bare.keras")  # no preprocessing: its name is needed
    with pytest.raises(InvalidArgumentError, match=r"registry name, path.*Received: candidate"):
        kt.rank_backbones([str(tmp_path / "bare.keras")], (x, y), verbose=0)
    from kertransfer.errors import InvalidTypeError

    with pytest.raises(InvalidTypeError, match=r"data must be .*Received: data='ndarray'"):
        kt.rank_backbones(["pixels"], x, verbose=0)  # images without their labels


def _one_pass_case(tiny_backbone_name, monkeypatch):
    """A tiny transfer model, a mid-backbone layer, labelled images, and a list that
    grows by one per data pass of `rank_backbones`."""
    import kertransfer as kt
    from kertransfer.data import gathering
    from kertransfer.insight import ranking

    rng = np.random.default_rng(1)
    y = _labels(48, 3)
    x = rng.uniform(0, 255, (48, 16, 16, 3)).astype("float32")
    model = kt.build_transfer_model(tiny_backbone_name, 5, input_shape=(16, 16, 3),
                                    weights=None)
    spatial = [layer.name for layer in model.backbone.layers[1:]
               if len(layer.output.shape) == 4]
    passes = []
    real = gathering.gather

    def counting(*args, **kwargs):
        passes.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ranking, "gather", counting)
    return model, spatial[len(spatial) // 2], x, y, passes


def _ranks_from_one_pass(model, mid, data, x, y, passes):
    import keras

    import kertransfer as kt

    passes.clear()
    result = kt.rank_backbones({"whole": model, "mid": (model, mid), "pixels": "pixels"},
                               data, verbose=0)
    rows = {r["candidate"]: r for r in result.rows}
    assert passes == [1, 1]  # the model's pass gives both of its candidates, then pixels
    # The layer's map, averaged over space, is what "mid" scored.
    inner = keras.Model(model.backbone.input, model.backbone.get_layer(mid).output)
    before = model.layers[[layer.name for layer in model.layers].index("backbone") - 1]
    pre = keras.Model(model.input, before.output)  # preprocessing
    expected = np.asarray(inner(pre(x))).mean(axis=(1, 2))
    assert rows["mid"]["dim"] == expected.shape[1]
    assert rows["mid"]["logme"] == pytest.approx(logme(expected, y), rel=1e-4)
    pooled = keras.Model(model.input, model.get_layer("pool").output).predict(x, verbose=0)
    assert rows["whole"]["logme"] == pytest.approx(logme(pooled, y), rel=1e-4)
    assert rows["whole"]["leep"] is not None and rows["mid"]["leep"] is None
    assert "one pass for 2" in rows["mid"]["note"]


@agnostic
@agnostic
def test_a_random_weights_candidate_is_seeded_without_touching_the_callers_state(
        tiny_backbone_name):
    import random

    import kertransfer as kt

    rng = np.random.default_rng(2)
    y = _labels(40, 4)
    x = rng.uniform(0, 255, (40, 16, 16, 3)).astype("float32")

    def score(seed):
        rows = kt.rank_backbones({"r": (tiny_backbone_name, None)}, (x, y), metrics=["logme"],
                                 seed=seed, verbose=0).rows
        return rows[0]["logme"]

    random.seed(5)
    state = random.getstate()
    first = score(0)
    assert random.getstate() == state  # the caller's stream goes on undisturbed
    assert score(0) == pytest.approx(first, abs=1e-6)  # the same initialisation
    assert score(1) != pytest.approx(first, abs=1e-6)  # another seed, other weights


def test_a_model_and_its_layers_rank_from_one_pass(tiny_backbone_name, monkeypatch):
    import kertransfer as kt
    from kertransfer.errors import InvalidArgumentError

    model, mid, x, y, passes = _one_pass_case(tiny_backbone_name, monkeypatch)
    _ranks_from_one_pass(model, mid, (x, y), x, y, passes)
    assert kt.rank_backbones([(model, mid)], (x, y), verbose=0).rows[0]["candidate"] == \
        f"{model.name} at {mid}"
    with pytest.raises(InvalidArgumentError, match=r"no layer 'conv_nope'.*Received: candidate"):
        kt.rank_backbones({"bad": (model, "conv_nope")}, (x, y), verbose=0)


def test_a_streamed_model_and_its_layers_rank_from_one_pass(tiny_backbone_name, monkeypatch):
    import tensorflow as tf

    model, mid, x, y, passes = _one_pass_case(tiny_backbone_name, monkeypatch)
    _ranks_from_one_pass(model, mid, tf.data.Dataset.from_tensor_slices((x, y)).batch(16),
                         x, y, passes)
