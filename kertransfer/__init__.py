"""kertransfer: transfer learning for Keras 3, done right.

Quick start::

    import kertransfer as kt

    data = kt.data.load("digits_m", image_size=(32, 32), validation_split=0.2)
    model = kt.build_transfer_model("mobilenet_v3_small", num_classes=data.num_classes,
                                    input_shape=(32, 32, 3), weights=None)
    kt.trainable_summary(model)
"""

import importlib
import sys
from typing import TYPE_CHECKING

from kertransfer import _serializables
from kertransfer.version import __version__

# ``import kertransfer`` imports nothing heavy: each name below is imported on
# first use (PEP 562), so ``kertransfer --help`` starts without Keras, and
# KerasTuner, scikit-learn and matplotlib load only with what needs them. The
# classes Keras deserializes are registered on that first use, or at once when
# Keras was imported first (kertransfer._serializables).
_SUBMODULES = ("backbones", "callbacks", "data", "errors", "freezing", "insight",
               "methods", "models", "optimizers", "serving", "training", "tuning")
_NAMES = {
    "BackboneSpec": "kertransfer.backbones.spec",
    "KertransferError": "kertransfer.errors",
    "TransferHyperModel": "kertransfer.tuning",
    "TransferModel": "kertransfer.models",
    "build_imagenet_classifier": "kertransfer.models",
    "adapt": "kertransfer.methods",
    "build_transfer_model": "kertransfer.models",
    "export": "kertransfer.serving",
    "fine_tune": "kertransfer.training",
    "freeze": "kertransfer.freezing",
    "get_backbone_spec": "kertransfer.backbones",
    "lint": "kertransfer.insight",
    "list_backbones": "kertransfer.backbones",
    "lr_find": "kertransfer.training",
    "pretrain": "kertransfer.methods.pretext",
    "rank_backbones": "kertransfer.insight",
    "recalibrate_batchnorm": "kertransfer.training",
    "register_backbone": "kertransfer.backbones",
    "train": "kertransfer.training",
    "trainable_summary": "kertransfer.freezing",
    "tune": "kertransfer.tuning",
}

__all__ = [
    "BackboneSpec",
    "KertransferError",
    "TransferHyperModel",
    "TransferModel",
    "__version__",
    "adapt",
    "backbones",
    "build_imagenet_classifier",
    "build_transfer_model",
    "callbacks",
    "data",
    "errors",
    "export",
    "fine_tune",
    "freeze",
    "freezing",
    "get_backbone_spec",
    "insight",
    "lint",
    "list_backbones",
    "lr_find",
    "methods",
    "models",
    "optimizers",
    "pretrain",
    "rank_backbones",
    "recalibrate_batchnorm",
    "register_backbone",
    "serving",
    "train",
    "trainable_summary",
    "training",
    "tune",
    "tuning",
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        value = importlib.import_module(f"kertransfer.{name}")
    elif name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
    else:
        raise AttributeError(f"module 'kertransfer' has no attribute {name!r}")
    _serializables.register()
    return value


if "keras" in sys.modules:  # Keras is paid for: let keras.saving.load_model know our classes
    _serializables.register()


def __dir__():
    return list(__all__)


if TYPE_CHECKING:  # the names as a type checker or an IDE should see them
    from kertransfer import (
        backbones,
        callbacks,
        data,
        errors,
        freezing,
        insight,
        methods,
        models,
        optimizers,
        serving,
        training,
        tuning,
    )
    from kertransfer.backbones import get_backbone_spec, list_backbones, register_backbone
    from kertransfer.backbones.spec import BackboneSpec
    from kertransfer.errors import KertransferError
    from kertransfer.freezing import freeze, trainable_summary
    from kertransfer.insight import lint, rank_backbones
    from kertransfer.methods import adapt
    from kertransfer.methods.pretext import pretrain
    from kertransfer.models import TransferModel, build_imagenet_classifier, build_transfer_model
    from kertransfer.serving import export
    from kertransfer.training import fine_tune, lr_find, recalibrate_batchnorm, train
    from kertransfer.tuning import TransferHyperModel, tune
