"""Transfer models: construction, layers and weight loading."""

from kertransfer.models.build import build_transfer_model
from kertransfer.models.imagenet.classifier import build_imagenet_classifier
from kertransfer.models.layers import Preprocess
from kertransfer.models.transfer_model import TransferModel
from kertransfer.models.weights import WeightsReport, copy_weights_by_name, load_backbone_weights

__all__ = [
    "Preprocess",
    "TransferModel",
    "WeightsReport",
    "build_imagenet_classifier",
    "build_transfer_model",
    "copy_weights_by_name",
    "load_backbone_weights",
]
