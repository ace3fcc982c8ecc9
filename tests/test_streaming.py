"""Data beyond memory: no library path loads a split of a streamed source whole.

A folder of PNGs is loaded as a bundle whose ``as_numpy`` and the one
materialising helper (`kertransfer.data.gathering.materialise`) raise: any
path that would hold every image in memory fails these tests.
"""

import numpy as np
import pytest

import kertransfer as kt
from kertransfer.data import gathering
from kertransfer.data.bundle import DataBundle


@pytest.fixture
def streamed(tiny_folder, monkeypatch):
    """A bundle of the folder that refuses to be loaded whole."""

    def refuse(*args, **kwargs):
        raise AssertionError("a whole split was loaded into memory")

    bundle = kt.data.load(tiny_folder, image_size=(16, 16), batch_size=16, validation_split=0.25,
                          seed=0, verbose=0)
    monkeypatch.setattr(DataBundle, "as_numpy", refuse)
    monkeypatch.setattr(gathering, "materialise", refuse)
    return bundle


def test_fingerprints_come_from_file_names_sizes_and_times(tiny_folder):
    import os

    def load():
        return kt.data.load(tiny_folder, image_size=(16, 16), validation_split=0.25, seed=0,
                            verbose=0)

    first = load().fingerprints
    assert first == load().fingerprints and first["train"] != first["val"]
    assert kt.data.load(tiny_folder, image_size=(16, 16), validation_split=0.25, seed=1,
                        verbose=0).fingerprints["train"] != first["train"]  # other split
    path = next(tiny_folder.glob("class0/*.png"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a rewritten file
    assert load().fingerprints != first


def test_labels_per_task_are_other_data_for_the_cache(tiny_folder, tiny_backbone_name,
                                                      tmp_path):
    from kertransfer.data.fingerprint import fingerprint

    plain = kt.data.load(tiny_folder, image_size=(16, 16), validation_split=0.25, seed=0,
                         verbose=0)
    tasks = plain.with_tasks({"odd": [0, 1, 0, 1]})
    assert fingerprint(tasks) != fingerprint(plain)
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    cache = kt.training.FeatureCache(tmp_path)
    stored, _ = cache.features(model, plain, verbose=0)
    relabelled, hit = cache.features(model, tasks, verbose=0)
    assert not hit and set(relabelled.labels) == {"odd"}
    np.testing.assert_array_equal(relabelled.labels["odd"], stored.labels % 2)


def test_fine_tune_and_its_cached_head_phase_stream(tiny_backbone_name, streamed, tmp_path):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, head_units=(8,))
    result = kt.fine_tune(model, streamed, epochs=1, freeze_epochs=1, verbose=0)
    assert result.cached_features and len(result.history["loss"]) == 2
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    result = kt.fine_tune(model, streamed, epochs=1, verbose=0)  # a linear probe first
    assert result.probe.examples == streamed.counts["train"]
    history = kt.training.train_head_on_features(model, streamed, epochs=2, cache_dir=tmp_path,
                                                 verbose=0)
    assert len(history["val_loss"]) == 2
    rows = sorted(e["rows"] for e in kt.training.FeatureCache(tmp_path).entries())
    assert rows == sorted([streamed.counts["train"], streamed.counts["val"]])


def test_search_streams_a_bundle(tiny_backbone_name, streamed, tmp_path):
    saved = tmp_path / "tiny.keras"  # fixed "pretrained" weights: one key for both trials
    kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                            weights=None).save(saved)
    hm = kt.TransferHyperModel(tiny_backbone_name, num_classes=4, input_shape=(16, 16, 3),
                               weights=str(saved), epochs=2, batch_size=16,
                               space={"head_epochs": 1})
    result = kt.tune(hm, streamed, max_trials=2, epochs=2, directory=tmp_path / "search",
                     verbose=0)
    assert [r["status"] for r in result.results] == ["COMPLETED"] * 2
    assert hm.features.passes == 2  # train and val, once for both trials


def test_ranking_and_recalibration_stream(tiny_backbone_name, streamed):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    assert kt.recalibrate_batchnorm(model, streamed) == -(-streamed.counts["train"] // 16)
    ranking = kt.rank_backbones({"tiny": model.backbone}, streamed, metrics=["logme"],
                                verbose=0)
    assert np.isfinite(ranking.rows[0]["logme"])


def test_lr_find_pretrain_adapt_train_and_grad_cam_stream(tiny_backbone_name, streamed, tmp_path):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    found = kt.lr_find(model, streamed, steps=5, verbose=0)
    assert len(found.lrs) == 5
    kt.pretrain(tiny_backbone_name, streamed, task="rotation", epochs=1, out=tmp_path / "p",
                verbose=0)
    kt.adapt(model, source=streamed, target=streamed, method="coral", epochs=1)
    trained = kt.train(model, streamed, epochs=1, verbose=0)
    assert "val_accuracy" in trained.metrics
    cams = kt.insight.grad_cam(model, streamed.val)
    assert len(cams.heatmaps) == streamed.counts["val"]


def test_long_passes_show_keras_progress_bars_and_verbose_0_is_quiet(tiny_backbone_name,
                                                                      streamed, tmp_path,
                                                                      capsys):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    import re

    for verbose in (1, 0):
        kt.recalibrate_batchnorm(model, streamed, verbose=verbose)
        kt.training.FeatureCache(tmp_path / str(verbose)).features(model, streamed,
                                                                   verbose=verbose)
        kt.rank_backbones({"tiny": model.backbone}, streamed, metrics=["logme"],
                          verbose=verbose)
        out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
        if verbose:  # three bars run to the end
            assert len(re.findall(r"\b(\d+)/\1 ", out)) >= 3, out
        else:
            assert out == ""


def test_a_search_child_reloads_a_folder_bundle_and_refuses_changed_files(tiny_folder,
                                                                          tmp_path):
    from kertransfer.errors import DataError
    from kertransfer.tuning.child import _data

    bundle = kt.data.load(tiny_folder, image_size=(16, 16), validation_split=0.25, seed=0,
                          augment={"zoom": 0.1}, verbose=0).with_tasks({"odd": [0, 1, 0, 1]})
    config = {"load": {"args": bundle.load_args, "fingerprints": bundle.fingerprints}}
    again, _ = _data(config, tmp_path / "none.npz")
    assert again.fingerprints == bundle.fingerprints and again.tasks == {"odd": 2}
    assert again.augmentation is not None
    next(tiny_folder.glob("class1/*.png")).unlink()
    with pytest.raises(DataError, match="changed since the search started"):
        _data(config, tmp_path / "none.npz")
    assert kt.data.load(kt.data.load(tiny_folder, verbose=0).as_numpy("train"),
                        verbose=0).load_args is None  # arrays are sent, not reloaded


def test_search_streams_a_dataset_of_batches(tiny_backbone_name, tiny_data, tmp_path,
                                             monkeypatch):
    import tensorflow as tf

    def refuse(*args, **kwargs):
        raise AssertionError("a whole split was loaded into memory")

    monkeypatch.setattr(gathering, "materialise", refuse)
    x, y = tiny_data
    train = tf.data.Dataset.from_tensor_slices((x[:150], y[:150])).batch(25)
    val = tf.data.Dataset.from_tensor_slices((x[150:], y[150:])).batch(25)
    hm = kt.TransferHyperModel(tiny_backbone_name, num_classes=4, input_shape=(16, 16, 3),
                               weights=None, epochs=2, batch_size=25,
                               space={"head_epochs": 1})
    result = kt.tune(hm, train, validation_data=val, max_trials=1, epochs=2,
                     directory=tmp_path / "search", verbose=0)
    assert [r["status"] for r in result.results] == ["COMPLETED"]
    stored = kt.training.FeatureCache(tmp_path / "search" / "features").entries()
    assert sorted(e["rows"] for e in stored) == [50, 150]
