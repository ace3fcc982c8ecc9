"""Transfer models: construction, layers, weight loading and surgery (cutting a model)."""

from kertransfer.models.build import build_transfer_model
from kertransfer.models.imagenet.classifier import build_imagenet_classifier
from kertransfer.models.imagenet.install import install_weights, installed_weights
from kertransfer.models.layers import Preprocess
from kertransfer.models.surgery import (
    compute_features,
    feature_extractor,
    head_on_features,
    split_at_block,
)
from kertransfer.models.transfer_model import SharedBackboneModel, TransferModel
from kertransfer.models.weights import WeightsReport, copy_weights_by_name, load_backbone_weights

__all__ = [
    "SharedBackboneModel",
    "Preprocess",
    "TransferModel",
    "WeightsReport",
    "build_imagenet_classifier",
    "build_transfer_model",
    "compute_features",
    "feature_extractor",
    "head_on_features",
    "install_weights",
    "installed_weights",
    "split_at_block",
    "copy_weights_by_name",
    "load_backbone_weights",
]
