"""kertransfer: transfer learning for Keras 3, done right.

Quick start::

    import kertransfer as kt

    data = kt.data.load("digits_m", image_size=(32, 32), validation_split=0.2)
    model = kt.build_transfer_model("mobilenet_v3_small", num_classes=data.num_classes,
                                    input_shape=(32, 32, 3), weights=None)
    kt.trainable_summary(model)
"""

from kertransfer import (
    backbones,
    callbacks,
    data,
    errors,
    explain,
    export,
    fewshot,
    freezing,
    methods,
    models,
    optimizers,
    report,
    training,
    transferability,
    tuning,
)
from kertransfer.backbones import get_backbone_spec, list_backbones, register_backbone
from kertransfer.backbones.spec import BackboneSpec
from kertransfer.errors import KertransferError
from kertransfer.freezing import freeze, trainable_summary
from kertransfer.lint import lint
from kertransfer.methods.pretext import pretrain
from kertransfer.models import TransferModel, build_imagenet_classifier, build_transfer_model
from kertransfer.training import fine_tune, lr_find, recalibrate_batchnorm
from kertransfer.transferability import rank_backbones
from kertransfer.tuning import TransferHyperModel, tune
from kertransfer.version import __version__

__all__ = [
    "BackboneSpec",
    "KertransferError",
    "TransferHyperModel",
    "TransferModel",
    "__version__",
    "backbones",
    "build_imagenet_classifier",
    "build_transfer_model",
    "callbacks",
    "data",
    "errors",
    "explain",
    "export",
    "fewshot",
    "fine_tune",
    "freeze",
    "freezing",
    "get_backbone_spec",
    "lint",
    "list_backbones",
    "lr_find",
    "methods",
    "models",
    "optimizers",
    "pretrain",
    "rank_backbones",
    "recalibrate_batchnorm",
    "report",
    "register_backbone",
    "trainable_summary",
    "training",
    "transferability",
    "tune",
    "tuning",
]
