"""One data protocol: every data-taking public function × every form of data.

Each function takes what ``keras.Model.fit`` takes (numpy images alone where only
images are needed, ``(x, y)`` arrays, a ``tf.data.Dataset`` of batches, a
``keras.utils.PyDataset``) plus a `DataBundle` and an `ArrayData`, or refuses
with a `KertransferError` that names its argument. The same images in every
form give the same result (up to order) wherever the result does not depend on
batching or order.
"""

import math

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.errors import KertransferError

agnostic = pytest.mark.backend_agnostic

N, SIZE, CLASSES, BATCH = 24, 32, 3, 8

# Under JAX (the tests_jax session) two forms that need no TensorFlow run, (x, y) arrays
# and a PyDataset, to keep that session short; every form runs under TensorFlow.
ALL = ["images", pytest.param("xy", marks=agnostic), "tf_dataset",
       pytest.param("py_dataset", marks=agnostic), "bundle", "array_data"]
LABELLED = ALL[1:]
BAD = ["string", pytest.param("ints", marks=agnostic)]


def _arrays():
    rng = np.random.default_rng(0)
    y = (np.arange(N) % CLASSES).astype("int32")
    x = rng.uniform(0, 120, (N, SIZE, SIZE, 3)).astype("float32")
    for c in range(CLASSES):
        x[y == c, :, :, c] += 120.0  # the class is the bright channel
    return x, y


class UserBatches(keras.utils.PyDataset):
    """A user's own PyDataset of (x, y) batches (it does not raise past its end)."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return math.ceil(len(self.x) / BATCH)

    def __getitem__(self, index):
        rows = slice(index * BATCH, (index + 1) * BATCH)
        return self.x[rows], self.y[rows]


def make(form):
    x, y = _arrays()
    if form == "images":
        return x
    if form == "xy":
        return x, y
    if form == "tf_dataset":
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    if form == "py_dataset":
        return UserBatches(x, y)
    if form == "bundle":
        return kt.data.load((x, y), image_size=(SIZE, SIZE), batch_size=BATCH, verbose=0)
    if form == "array_data":
        return kt.data.from_arrays(x, y, batch_size=BATCH)
    if form == "string":
        return "photos"
    if form == "ints":
        return [1, 2, 3]
    raise AssertionError(form)


def _refused(argument):
    return pytest.raises(KertransferError, match=rf"{argument}\b.*Received: {argument}=")


def _np(value):
    return np.asarray(keras.ops.convert_to_numpy(value), dtype="float64")


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return kt.build_transfer_model("mobilenet_v3_small", num_classes=CLASSES,
                                   input_shape=(SIZE, SIZE, 3), weights=None, dropout=0.0)


@pytest.fixture(scope="module")
def small(tiny_backbone_name):
    keras.utils.set_random_seed(0)
    return kt.build_transfer_model(tiny_backbone_name, CLASSES, input_shape=(SIZE, SIZE, 3),
                                   weights=None, freeze="none", bn="trainable")


def _moving_means(net):
    return [_np(layer.moving_mean) for layer in kt.training.batchnorm.batchnorm_layers(net)]


# -- streaming passes over images: BatchNorm recalibration and AdaBN ------------------------

@pytest.mark.parametrize("form", ALL)
@pytest.mark.parametrize("function", ["recalibrate_batchnorm", "adabn"])
def test_batchnorm_statistics_are_the_same_from_every_form(small, form, function):
    recalibrate = kt.recalibrate_batchnorm if function == "recalibrate_batchnorm" \
        else kt.methods.adabn
    x, _ = _arrays()
    kt.recalibrate_batchnorm(small, [x[i:i + BATCH] for i in range(0, N, BATCH)])
    expected = _moving_means(small)
    count = recalibrate(small, make(form), **({"batch_size": BATCH} if form in ("images", "xy")
                                              else {}))
    assert count == N // BATCH
    # Equal batches: the moving mean is the images' mean, whatever the order.
    for got, want in zip(_moving_means(small), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", BAD)
def test_batchnorm_recalibration_refuses_other_data(small, form):
    with _refused("data"):
        kt.recalibrate_batchnorm(small, make(form))
    with _refused("target"):
        kt.methods.adabn(small, make(form))


# -- lr_find: labelled batches, cycled ------------------------------------------------------

@pytest.mark.parametrize("form", LABELLED)
def test_lr_find_takes_every_labelled_form(model, form):
    result = kt.lr_find(model, make(form), steps=5, plot=None, verbose=0)
    assert len(result.lrs) == 5 and np.isfinite(result.losses).all()


@pytest.mark.parametrize("form", [pytest.param("images", marks=agnostic), *BAD])
def test_lr_find_refuses_data_without_labels(model, form):
    with _refused("data"):
        kt.lr_find(model, make(form), steps=5, plot=None, verbose=0)


# -- rank_backbones: features and labels in one pass ----------------------------------------

@pytest.mark.parametrize("form", LABELLED)
def test_rank_backbones_scores_every_labelled_form_alike(model, form):
    candidates = {"pixels": "pixels", "model": model}
    expected = kt.rank_backbones(candidates, _arrays(), verbose=0)
    got = kt.rank_backbones(candidates, make(form), verbose=0)
    assert got.examples == N and got.classes == CLASSES
    want = {r["candidate"]: r for r in expected.rows}
    for row in got.rows:  # the scores do not depend on the order of the examples
        for metric in ("logme", "leep", "hscore"):
            if want[row["candidate"]][metric] is None:
                assert row[metric] is None
            else:
                assert row[metric] == pytest.approx(want[row["candidate"]][metric], rel=1e-3)


@pytest.mark.parametrize("form", [pytest.param("images", marks=agnostic), *BAD])
def test_rank_backbones_refuses_data_without_labels(form):
    with _refused("data"):
        kt.rank_backbones(["pixels"], make(form), verbose=0)


# -- Grad-CAM and features: images, labels ignored ------------------------------------------

@pytest.mark.parametrize("form", ALL)
def test_grad_cam_explains_every_form(model, form, tmp_path):
    expected = kt.insight.grad_cam(model, _arrays()[0], batch_size=BATCH)
    got = kt.insight.grad_cam(model, make(form), batch_size=BATCH, out=tmp_path)
    assert got.heatmaps.shape == (N, SIZE, SIZE) and len(got.paths) == N
    np.testing.assert_allclose(np.sort(got.probability), np.sort(expected.probability),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("form", ALL)
def test_extract_features_reads_every_form(model, form):
    expected = kt.methods.fewshot.extract_features(model, _arrays()[0])
    got = kt.methods.fewshot.extract_features(model, make(form), batch_size=BATCH)
    assert got.shape == expected.shape
    np.testing.assert_allclose(np.sort(got.sum(axis=1)), np.sort(expected.sum(axis=1)),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", BAD)
def test_image_functions_refuse_other_data(model, form):
    with _refused("images"):
        kt.insight.grad_cam(model, make(form))
    with _refused("images"):
        kt.methods.fewshot.extract_features(model, make(form))


# -- few-shot: labels from the data ---------------------------------------------------------

@pytest.mark.parametrize("form", LABELLED)
def test_few_shot_functions_take_labels_from_the_data(form):
    clf = kt.methods.fewshot.PrototypeClassifier("pixels").fit(make(form))
    assert clf.score(make(form)) == 1.0  # the bright channel tells the class
    assert clf.predict(make(form)).shape == (N,)
    result = kt.methods.fewshot.evaluate_episodes("pixels", make(form), ways=3, shots=2, queries=2,
                                          episodes=3)
    assert result.mean == 1.0 and len(result.accuracies) == 3


@pytest.mark.parametrize("form", [pytest.param("images", marks=agnostic), *BAD])
def test_few_shot_functions_refuse_data_without_labels(form):
    with _refused("images"):
        kt.methods.fewshot.PrototypeClassifier("pixels").fit(make(form))
    with _refused("images"):
        kt.methods.fewshot.evaluate_episodes("pixels", make(form), ways=3, shots=2, queries=2)


@agnostic
def test_few_shot_labels_are_given_once():
    x, y = _arrays()
    clf = kt.methods.fewshot.PrototypeClassifier("pixels").fit(x, y)  # the classic call
    assert clf.score(x, y) == 1.0
    with pytest.raises(KertransferError, match=r"labels.*twice.*Received: labels="):
        kt.methods.fewshot.PrototypeClassifier("pixels").fit((x, y), y)


# -- pretraining and domain adaptation ------------------------------------------------------

@pytest.mark.parametrize("form", ALL)
def test_pretrain_takes_every_form(tiny_backbone_name, form):
    result = kt.pretrain(tiny_backbone_name, make(form), task="rotation", epochs=1,
                         batch_size=BATCH, verbose=0)
    assert np.isfinite(result.history["loss"]).all()


@pytest.mark.parametrize("form", [pytest.param("py_dataset", marks=agnostic), "tf_dataset"])
def test_supervised_pretraining_counts_the_classes_of_a_stream(tiny_backbone_name, form):
    result = kt.pretrain(tiny_backbone_name, make(form), task="supervised", epochs=1,
                         verbose=0)
    assert result.pretext.head.units == CLASSES


@pytest.mark.parametrize("form", [pytest.param("ints", marks=agnostic)])
def test_pretrain_refuses_other_data(tiny_backbone_name, form):
    with _refused("data"):
        kt.pretrain(tiny_backbone_name, make(form), task="rotation", verbose=0)


@pytest.mark.parametrize("form", LABELLED)
def test_adapt_takes_every_form(small, form):
    # Arrays: another domain (inverted images); other forms: the same form again.
    target = 255.0 - _arrays()[0] if form == "xy" else make(form)
    out = kt.methods.adapt(small, source=make(form), target=target, method="coral",
                           epochs=1)
    assert out.model is small and out.method == "coral"
    assert len(out.history["loss"]) == 1 and np.isfinite(out.history["loss"]).all()


@pytest.mark.parametrize("form", [pytest.param("images", marks=agnostic), *BAD])
def test_adapt_refuses_sources_without_labels(small, form):
    with _refused("source"):
        kt.methods.adapt(small, source=make(form), target=_arrays()[0], method="coral")
    if form != "images":
        with _refused("target"):
            kt.methods.adapt(small, source=_arrays(), target=make(form), method="coral")


# -- training: train, fine_tune, train_head_on_features, tune, LwF ---------------------------

def _fresh(name):
    return kt.build_transfer_model(name, CLASSES, input_shape=(SIZE, SIZE, 3), weights=None)


@pytest.mark.parametrize("form", LABELLED)
@pytest.mark.parametrize("function", ["train", "fine_tune", "train_head_on_features"])
def test_training_functions_take_every_labelled_form(tiny_backbone_name, form, function):
    model = _fresh(tiny_backbone_name)
    data = make(form)
    if function == "train":
        out = kt.training.train(model, data, epochs=1, verbose=0)
        assert len(out.history["loss"]) == 1
    elif function == "fine_tune":
        out = kt.fine_tune(model, data, epochs=1, freeze_epochs=1, patience=None, verbose=0)
        # The probe head (phase 1) saw every labelled row, then one epoch of phase 2.
        assert out.probe.examples == len(make("xy")[1])
        assert len(out.history["loss"]) == 1
    else:
        history = kt.training.train_head_on_features(model, data, epochs=1, verbose=0)
        assert len(history["loss"]) == 1


@pytest.mark.parametrize("form", [pytest.param("images", marks=agnostic), *BAD])
@pytest.mark.parametrize("function", ["train", "fine_tune"])
def test_training_functions_refuse_data_without_labels(tiny_backbone_name, form, function):
    model = _fresh(tiny_backbone_name)
    run = {"train": lambda d: kt.training.train(model, d, epochs=1, verbose=0),
           "fine_tune": lambda d: kt.fine_tune(model, d, epochs=1, verbose=0)}[function]
    with pytest.raises(KertransferError, match=r"train\b|data\b"):
        run(make(form))


@pytest.mark.parametrize("form", ["xy", "tf_dataset", "bundle"])
def test_tune_takes_labelled_forms(tiny_backbone_name, form, tmp_path):
    hm = kt.TransferHyperModel(tiny_backbone_name, num_classes=CLASSES,
                               input_shape=(SIZE, SIZE, 3), weights=None, epochs=1,
                               batch_size=BATCH, space={"head_epochs": 1})
    data = make(form)
    val = None if form == "bundle" else make("xy")
    if form == "bundle":
        x, y = _arrays()
        data = kt.data.load((x, y), image_size=(SIZE, SIZE), batch_size=BATCH,
                            validation_split=0.25, seed=0, verbose=0)
    tuner = kt.tune(hm, data, validation_data=val, max_trials=1, directory=tmp_path / "s",
                    verbose=0)
    assert len(tuner.tuner.oracle.trials) == 1


@pytest.mark.parametrize("form", [pytest.param("xy", marks=agnostic), "array_data", "bundle"])
def test_lwf_takes_in_memory_forms(tiny_backbone_name, form):
    source = _fresh(tiny_backbone_name)
    two = kt.methods.learn_without_forgetting(source, make(form), CLASSES, warmup_epochs=1,
                                              epochs=1, batch_size=BATCH)
    assert set(two.output) == {"old", "new"}
