"""Each transfer-lint rule: a model that triggers it and one that does not."""

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.insight.linting import lint

agnostic = pytest.mark.backend_agnostic


def _model(name, **kwargs):
    kwargs.setdefault("weights", None)
    return kt.build_transfer_model(name, 3, input_shape=(16, 16, 3), **kwargs)


def test_batchnorm_training_inside_a_frozen_block(tiny_backbone_name):
    loose = _model(tiny_backbone_name, freeze=2)
    assert lint(loose).ok  # BatchNorm is frozen with its block
    loose.backbone.get_layer("stem_bn").trainable = True  # as a hand-written loop might
    report = lint(loose)
    assert report.rules() == ["bn-training-in-frozen-block"]
    assert "stem_bn" in report.findings[0].where and "bn='frozen'" in report.findings[0].fix
    assert lint(_model(tiny_backbone_name, freeze=2, bn="trainable")).ok
    assert lint(_model(tiny_backbone_name, freeze="none", bn="trainable")).ok  # nothing frozen


def test_preprocessing_twice_or_missing(tiny_backbone_name):
    model = _model(tiny_backbone_name)
    raw = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    assert lint(model, raw).ok
    assert lint(model, raw / 255.0).rules() == ["preprocessing-twice"]
    bare = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    assert lint(bare, raw).rules() == ["preprocessing-missing"]
    scaled = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255),
                               keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    assert lint(scaled, raw).ok


@agnostic
def test_trainable_changed_after_compile(tiny_backbone_name):
    from kertransfer.training import compile_for_transfer

    model = _model(tiny_backbone_name, freeze="all")
    compile_for_transfer(model, 1e-3)
    assert lint(model).ok
    model.backbone.trainable = True  # unfrozen behind compile's back
    report = lint(model)
    assert report.rules() == ["trainable-changed-after-compile"]
    assert "unfrozen" in report.findings[0].message
    kt.freeze(model, "none")  # kertransfer's freeze recompiles
    assert lint(model).ok


def test_backbone_rate_above_the_head(tiny_backbone_name):
    from kertransfer.optimizers import discriminative

    model = _model(tiny_backbone_name, freeze="none")
    model.compile(discriminative(keras.optimizers.Adam(1e-3), multipliers={"stem": 3.0}),
                  "sparse_categorical_crossentropy")
    assert lint(model).rules() == ["backbone-lr-above-head"]
    model.compile(discriminative(keras.optimizers.Adam(1e-3), decay=2.0),
                  "sparse_categorical_crossentropy")
    assert lint(model).ok  # each block down is slower


def test_backbone_still_random_while_meant_to_be_pretrained(tiny_backbone_name, tiny_data,
                                                             tmp_path):
    model = _model(tiny_backbone_name)
    assert lint(model).ok  # weights=None: nobody claimed it was pretrained
    assert lint(model, expect_pretrained=True).rules() == ["backbone-not-pretrained"]
    x, y = tiny_data
    source = _model(tiny_backbone_name, freeze="none", bn="trainable")
    source.compile("adam", "sparse_categorical_crossentropy")
    source.fit(x[:64], y[:64] % 3, epochs=1, verbose=0)  # BatchNorm statistics move
    source.save(tmp_path / "source.keras")
    loaded = _model(tiny_backbone_name, weights=str(tmp_path / "source.keras"))
    assert lint(loaded).ok
    fresh = _model(tiny_backbone_name)
    fresh.save(tmp_path / "u.keras")  # a file of a never-trained model
    assert lint(_model(tiny_backbone_name, weights=str(tmp_path / "u.keras"))).rules() == \
        ["backbone-not-pretrained"]


@agnostic
def test_head_too_large_for_the_examples(tiny_backbone_name):
    big = _model(tiny_backbone_name, head_units=(512,))
    report = lint(big, num_examples=100)
    assert report.rules() == ["head-too-large"] and "per example" in report.findings[0].message
    assert lint(_model(tiny_backbone_name), num_examples=100).ok
    assert "head-too-large" in lint(big).skipped  # no example count: not checked


def test_cli_lint_reports_and_fails_on_findings(tiny_backbone_name, tmp_path, capsys):
    from kertransfer.cli import main

    path = tmp_path / "model.keras"
    _model(tiny_backbone_name, head_units=(512,)).save(path)
    code = main(["lint", str(path), "--data", "digits", "--samples-per-class", "3"])
    printed = capsys.readouterr().out
    assert code == 1 and "[head-too-large]" in printed and "fix:" in printed
    _model(tiny_backbone_name).save(path)
    assert main(["lint", str(path), "--data", "digits", "--samples-per-class", "3"]) == 0
    assert "no findings" in capsys.readouterr().out

