"""Backbone specs, the registry, and block assignment.

``install_weights`` and ``installed_weights`` are aliases of
`kertransfer.models.imagenet.install_weights` / ``installed_weights``,
imported on first use: the converters build and check Keras models, which is
the models layer's business, so this package does not import them itself.
"""

from kertransfer.backbones.blocks import (
    assign_blocks,
    blocks_from_model,
    check_blocks,
    group_layers,
    is_batchnorm,
)
from kertransfer.backbones.registry import get_backbone_spec, list_backbones, register_backbone
from kertransfer.backbones.spec import BackboneSpec

__all__ = [
    "BackboneSpec",
    "assign_blocks",
    "blocks_from_model",
    "check_blocks",
    "get_backbone_spec",
    "group_layers",
    "install_weights",
    "installed_weights",
    "is_batchnorm",
    "list_backbones",
    "register_backbone",
]

_FROM_MODELS = ("install_weights", "installed_weights")


def __getattr__(name: str):
    if name in _FROM_MODELS:  # resolved lazily: backbones does not import models
        from kertransfer.models import imagenet

        return getattr(imagenet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
