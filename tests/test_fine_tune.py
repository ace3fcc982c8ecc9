"""fine_tune: head first on the frozen backbone, then fine-tuning, in one fit()."""

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.errors import InvalidArgumentError
from kertransfer.training import fine_tune, plot_history


@pytest.fixture
def bundle(tiny_data):
    return kt.data.load(tiny_data, image_size=(16, 16), batch_size=40, validation_split=0.2,
                        seed=0, verbose=0)


def test_two_phases_in_one_fit(tmp_path, tiny_backbone_name, bundle):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, freeze="none", bn="frozen")
    stem = model.backbone.get_layer("stem_conv").get_weights()[0].copy()
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(np.array_equal(
                self.model.backbone.get_layer("stem_conv").get_weights()[0], stem))

    out = fine_tune(model, bundle, epochs=2, freeze_epochs=2, base_lr=1e-2, lr_mult=0.1,
                    decay=2.0, patience=None, callbacks=[Watch()], cache_features=False,
                    verbose=0)
    assert out["cached_features"] is False
    assert seen == [True, True, False, False]  # frozen in phase 1, trained in phase 2
    assert [e for e, _ in out["stages"]] == [0, 2]
    assert len(out["history"]["loss"]) == 4 and "val_accuracy" in out["history"]
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == \
        pytest.approx(1e-3)
    assert type(model.optimizer).__name__ == "DiscriminativeAdam"
    plot_history(out["history"], tmp_path / "curve.png", stages=out["stages"])
    assert (tmp_path / "curve.png").stat().st_size > 0


@pytest.mark.backend_agnostic
def test_phase_one_on_cached_features(tiny_backbone_name, bundle, capsys):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, bn="frozen")
    stem = model.backbone.get_layer("stem_conv").get_weights()[0].copy()
    out = fine_tune(model, bundle, epochs=2, freeze_epochs=2, base_lr=1e-2, patience=None,
                    verbose=0)
    assert out["cached_features"] is True
    assert len(out["history"]["loss"]) == 4 and len(out["history"]["val_loss"]) == 4
    assert [e for e, _ in out["stages"]] == [0, 2]
    assert not np.array_equal(model.backbone.get_layer("stem_conv").get_weights()[0], stem)
    # The head's optimizer state carried over: the iteration count covers both phases.
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 4 * 4
    augmented = kt.data.load(bundle.as_numpy("train"), image_size=(16, 16), batch_size=40,
                             seed=0, augment={"contrast": 0.1}, verbose=0)
    out = fine_tune(model, augmented, epochs=1, freeze_epochs=1, patience=None, verbose=1)
    assert out["cached_features"] is False
    assert "Feature cache skipped: augmentation is on" in capsys.readouterr().out


def test_early_stopping_restores_best(tiny_backbone_name, bundle):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, bn="frozen")
    out = fine_tune(model, bundle, epochs=6, freeze_epochs=1, base_lr=5.0, lr_mult=1.0,
                    patience=1, verbose=0)
    # A huge rate makes val_loss worse at once; training stops early.
    assert len(out["history"]["loss"]) < 7


def test_bad_arguments(tiny_backbone_name, bundle):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    with pytest.raises(InvalidArgumentError, match="Received: epochs=0"):
        fine_tune(model, bundle, epochs=0)
    with pytest.raises(InvalidArgumentError, match="Received: lr_mult=-1"):
        fine_tune(model, bundle, lr_mult=-1)
