"""The public surface is exactly what we intend to export."""

import pytest

import kertransfer as kt


def test_top_level_exports():
    assert sorted(kt.__all__) == sorted([
        "BackboneSpec", "KertransferError", "TransferHyperModel", "TransferModel",
        "__version__", "adapt", "backbones",
        "build_imagenet_classifier", "build_transfer_model", "callbacks", "data", "errors",
        "export", "fine_tune", "freeze", "freezing",
        "get_backbone_spec", "insight", "lint", "list_backbones", "lr_find", "methods", "models",
        "optimizers", "pretrain", "rank_backbones", "recalibrate_batchnorm", "register_backbone",
        "serving", "train", "trainable_summary", "training", "tune", "tuning",
    ])
    for name in kt.__all__:
        assert hasattr(kt, name), name
    assert sorted(dir(kt)) == sorted(kt.__all__)
    with pytest.raises(AttributeError, match="no attribute 'fewshot'"):
        kt.fewshot  # noqa: B018  (moved to kt.methods.fewshot)


def test_names_outside_scripts_rely_on():
    assert callable(kt.data.load)
    assert issubclass(kt.errors.KertransferError, Exception)
    assert kt.KertransferError is kt.errors.KertransferError
    assert kt.pretrain is kt.methods.pretrain and callable(kt.pretrain)
    from kertransfer.methods.fewshot import PrototypeClassifier, evaluate_episodes

    assert kt.methods.fewshot.PrototypeClassifier is PrototypeClassifier
    assert callable(evaluate_episodes)
    assert kt.rank_backbones is kt.insight.rank_backbones
    assert callable(kt.insight.grad_cam) and callable(kt.insight.run_report)
    from kertransfer.insight.linting import lint

    assert kt.lint is lint and callable(kt.lint)  # the function, not its module


def test_export_is_a_function_and_serving_its_package():
    import types

    from kertransfer.serving.core import export

    assert kt.export is export and isinstance(kt.export, types.FunctionType)
    assert isinstance(kt.serving, types.ModuleType) and kt.serving.export is export
    assert callable(kt.serving.predict)
    assert kt.serving.SIGNATURES == ("serving_default", "serve_image_bytes")


def test_every_recipe_is_a_top_level_function():
    from kertransfer.methods.adaptation import adapt
    from kertransfer.training.run import train

    assert kt.train is train and kt.adapt is adapt
    for name in ("train", "fine_tune", "tune", "pretrain", "adapt", "export"):
        assert name in kt.__all__ and callable(getattr(kt, name))


def test_every_error_derives_from_a_builtin():
    import kertransfer.errors as errors

    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and obj is not errors.KertransferError:
            assert issubclass(obj, errors.KertransferError)
            builtin_bases = [c for c in obj.__mro__ if c.__module__ == "builtins"
                             and c not in (object, BaseException, Exception)]
            assert builtin_bases, f"{name} derives from no specific builtin"
