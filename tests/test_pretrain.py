"""Pretraining a backbone: pretext labels, losses, and loading the result."""

import keras
import numpy as np
import pytest
from keras import ops
from testing import run_recipe_test

import kertransfer as kt
from kertransfer.errors import DataError, InvalidArgumentError
from kertransfer.methods import PretextModel, nt_xent, rotate_batch, simclr_augmentation

agnostic = pytest.mark.backend_agnostic


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


@agnostic
def test_rotation_labels_match_the_rotated_inputs():
    x = np.random.default_rng(0).uniform(0, 255, (3, 5, 5, 2)).astype("float32")
    turned, labels = rotate_batch(ops.convert_to_tensor(x))
    turned, labels = _np(turned), _np(labels).astype(int)
    assert turned.shape == (12, 5, 5, 2)
    for k in range(4):
        np.testing.assert_array_equal(labels[3 * k:3 * k + 3], k)
        np.testing.assert_allclose(turned[3 * k:3 * k + 3], np.rot90(x, k, axes=(1, 2)))


@agnostic
def test_nt_xent_matches_numpy():
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    t = 0.3
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T / t
    losses = []
    for i in range(8):
        pos = (i + 4) % 8
        others = [j for j in range(8) if j != i]
        losses.append(-sim[i, pos] + np.log(np.sum(np.exp(sim[i, others]))))
    got = nt_xent(ops.convert_to_tensor(z1, "float32"), ops.convert_to_tensor(z2, "float32"), t)
    assert float(_np(got)) == pytest.approx(np.mean(losses), rel=1e-4)
    # Twins that agree cost less than twins that do not.
    assert float(_np(nt_xent(z1.astype("float32"), z1.astype("float32"), t))) < float(_np(got))


def test_simclr_positives_are_views_of_the_same_image(tiny_backbone_name):
    rng = np.random.default_rng(2)  # smooth images, so that a crop still resembles its source
    coarse = rng.uniform(0, 255, (8, 4, 4, 3)).astype("float32")
    x = np.kron(coarse, np.ones((1, 4, 4, 1), "float32"))
    base = kt.build_transfer_model(tiny_backbone_name, 2, input_shape=(16, 16, 3), weights=None)
    features = keras.Model(base.inputs, base.get_layer("pool").output)
    pretext = PretextModel(features, "simclr", augment=simclr_augmentation((16, 16)))
    v1, v2 = (_np(v) for v in pretext.views(ops.convert_to_tensor(x)))
    assert v1.shape == v2.shape == x.shape
    assert not np.allclose(v1, v2)  # two different random views ...

    def corr(a, b):
        a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
        return a @ b / np.sqrt((a @ a) * (b @ b))

    for views in (v1, v2):  # ... each of the image in its own row, not of another one
        nearest = [np.argmax([corr(view, image) for image in x]) for view in views]
        assert nearest == list(range(8))


@pytest.mark.parametrize("task", ["supervised", "rotation", "simclr", "autoencoder"])
def test_pretrained_weights_load_into_build_transfer_model(task, tiny_backbone_name, tiny_data,
                                                          tmp_path):
    x, y = tiny_data
    data = (x, y) if task == "supervised" else x
    result = run_recipe_test(kt.pretrain, tiny_backbone_name, data, task=task, epochs=1,
                             batch_size=32, out=tmp_path / task, expected_epochs=1)
    assert result.path == tmp_path / task / "backbone.keras" and result.path.is_file()
    assert {"config.json", "history.json", "learning_curve.png"} <= {
        p.name for p in (tmp_path / task).iterdir()}
    assert np.isfinite(result.history["loss"]).all()
    model = kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(16, 16, 3),
                                    weights=str(result.path))
    probe = x[:5] / 127.5 - 1.0  # the backbone's own input range ("tf" preprocessing)
    np.testing.assert_allclose(_np(model.backbone(probe, training=False)),
                               _np(result.backbone(probe, training=False)), atol=1e-5)


@agnostic
def test_rotation_pretraining_learns_the_pretext_task(tiny_backbone_name):
    # Digit-like asymmetric images: which way is up can be learned.
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 60, (256, 16, 16, 3)).astype("float32")
    x[:, :5, :, :] = 255.0  # a bright band at the top of every image
    result = kt.pretrain(tiny_backbone_name, x, task="rotation", epochs=4, batch_size=32,
                         learning_rate=3e-3, verbose=0)
    acc = result.history["accuracy"]
    assert acc[-1] > 0.6 and acc[-1] > acc[0]


def test_bad_arguments_are_named(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    with pytest.raises(InvalidArgumentError, match=r"task.*Did you mean.*Received: task='simclar'"):
        kt.pretrain(tiny_backbone_name, x, task="simclar")
    with pytest.raises(DataError, match=r"needs labels.*Received"):
        kt.pretrain(tiny_backbone_name, x, task="supervised")
    with pytest.raises(InvalidArgumentError, match=r"square.*Received: input_shape"):
        kt.pretrain(tiny_backbone_name, x[:, :, :12], task="rotation")
    with pytest.raises(InvalidArgumentError, match=r"epochs.*Received: epochs=0"):
        kt.pretrain(tiny_backbone_name, x, task="rotation", epochs=0)
