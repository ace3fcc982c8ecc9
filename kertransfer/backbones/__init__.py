"""Backbone specs, the registry, and block assignment.

Offline ImageNet weights are installed by `kertransfer.models.install_weights`
(the converters build and check Keras models: the models layer's business).
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
    "is_batchnorm",
    "list_backbones",
    "register_backbone",
]
