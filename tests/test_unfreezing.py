"""Staged unfreezing inside one fit(): what trains, and what the optimizer keeps."""

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.callbacks import GradualUnfreezing, StagedUnfreezing
from kertransfer.errors import InvalidArgumentError


class Snapshots(keras.callbacks.Callback):
    """Weights at the end of every epoch, and optimizer state at the first step of each."""

    def __init__(self):
        super().__init__()
        self.weights = []
        self.first_step = {}
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._seen = False

    def on_train_batch_begin(self, batch, logs=None):
        if not self._seen:
            self._seen = True
            opt = self.model.optimizer
            self.first_step[self._epoch] = {
                "iterations": int(keras.ops.convert_to_numpy(opt.iterations)),
                "vars": {v.name: np.array(keras.ops.convert_to_numpy(v))
                         for v in opt.variables},
            }

    def on_epoch_end(self, epoch, logs=None):
        opt = self.model.optimizer
        self.weights.append({
            "layers": {layer.name: [w.copy() for w in layer.get_weights()]
                       for layer in self.model.backbone.layers if layer.weights},
            "head": [w.copy() for w in self.model.get_layer("predictions").get_weights()],
            "opt": {v.name: np.array(keras.ops.convert_to_numpy(v)) for v in opt.variables},
            "iterations": int(keras.ops.convert_to_numpy(opt.iterations)),
        })


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.backend_agnostic
def test_staged_unfreezing_trains_exactly_the_scheduled_blocks(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, freeze="all", bn="trainable")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    initial = {layer.name: [w.copy() for w in layer.get_weights()]
               for layer in model.backbone.layers if layer.weights}
    snaps = Snapshots()
    stages = StagedUnfreezing([(0, "head"), (1, 1), (2, "all", 0.5)], verbose=0)
    model.fit(x, y, epochs=3, batch_size=50, verbose=0, callbacks=[stages, snaps])
    e0, e1, e2 = snaps.weights
    # Epoch 1: the head only; the whole backbone is bit for bit unchanged.
    assert all(_same(e0["layers"][n], initial[n]) for n in initial)
    # Epoch 2: the top block trains (conv and BatchNorm); the others do not change at all.
    assert not _same(e1["layers"]["block2_conv"], e0["layers"]["block2_conv"])
    assert not _same(e1["layers"]["block2_bn"], e0["layers"]["block2_bn"])
    for name in ("stem_conv", "stem_bn", "block1_conv", "block1_bn"):
        assert _same(e1["layers"][name], initial[name]), name
    # Epoch 3: everything trains.
    for name in ("stem_conv", "block1_conv"):
        assert not _same(e2["layers"][name], e1["layers"][name]), name
    assert stages.stage_epochs == [0, 1, 2]
    # The learning-rate factor of the last stage applies to the rate training began with.
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(5e-3)


@pytest.mark.backend_agnostic
def test_optimizer_state_survives_the_boundary(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, freeze="all", bn="frozen")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    snaps = Snapshots()
    model.fit(x, y, epochs=2, batch_size=50, verbose=0,
              callbacks=[StagedUnfreezing([(0, "head"), (1, "all")], verbose=0), snaps])
    end0 = snaps.weights[0]
    start1 = snaps.first_step[1]
    # The iteration count goes on.
    assert end0["iterations"] == 4 and start1["iterations"] == 4
    head_slots = [n for n in end0["opt"] if "predictions" in n and "kernel" in n
                  and not n.endswith("_step")]
    assert len(head_slots) == 2  # Adam's two moments of the head kernel
    for name in head_slots:
        assert np.abs(end0["opt"][name]).sum() > 0
        np.testing.assert_array_equal(start1["vars"][name], end0["opt"][name])
    # Newly unfrozen variables start with fresh (zero) moments.
    new_slots = [n for n in start1["vars"] if "stem_conv" in n]
    assert new_slots and all(not start1["vars"][n].any() for n in new_slots)
    assert snaps.weights[1]["iterations"] == 8


def test_gradual_unfreezing_adds_blocks_from_the_top(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, freeze="all", bn="trainable")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rows = kt.trainable_summary(self.model, print_fn=None).rows
            seen.append([r.state for r in rows if r.block != "head"])

    model.fit(x, y, epochs=5, batch_size=100, verbose=0,
              callbacks=[GradualUnfreezing(every=1, blocks_per_step=1, verbose=0), Record()])
    assert seen == [
        ["frozen", "frozen", "frozen"],
        ["frozen", "frozen", "trainable"],
        ["frozen", "trainable", "trainable"],
        ["trainable", "trainable", "trainable"],
        ["trainable", "trainable", "trainable"],
    ]


@pytest.mark.parametrize("schedule, pattern", [
    ([], "non-empty list.*Received: schedule=\\[\\]"),
    ([(1, "head"), (0, 2)], "increasing order.*Received: schedule="),
    ([(0, "top")], "Received: blocks='top'"),
    ([(0, 2, 0)], "Received: learning_rate_multiplier=0"),
    ([(0,)], "Received: entry=\\(0,\\)"),
])
def test_bad_schedules(schedule, pattern):
    with pytest.raises(InvalidArgumentError, match=pattern):
        StagedUnfreezing(schedule)


def test_schedule_beyond_the_block_count(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(InvalidArgumentError, match="backbone has 3.*Received: blocks=5"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[StagedUnfreezing([(0, 5)])])
