"""The backbone registry: names to `BackboneSpec`."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

from kertransfer.backbones.applications import application_specs
from kertransfer.backbones.efficientnet_lite import lite_specs
from kertransfer.backbones.sequence import sequence_specs
from kertransfer.backbones.spec import BackboneSpec
from kertransfer.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    UnknownBackboneError,
    format_message,
    suggest,
)
from kertransfer.validation import check_int

_REGISTRY: dict[str, BackboneSpec] = {}


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_backbone(
    spec: BackboneSpec | str,
    constructor: Callable[..., Any] | None = None,
    *,
    blocks: Sequence[tuple[str, str]] | None = None,
    preprocessing: str = "none",
    default_size: int = 224,
    min_size: int = 32,
    unmatched: str = "previous",
    overwrite: bool = False,
    **kwargs: Any,
) -> BackboneSpec:
    """Add a backbone to the registry.

    Pass a ready `BackboneSpec`, or a name and a constructor plus the
    spec fields. The constructor is called as
    ``constructor(include_top=False, weights=..., input_shape=(H, W, C))``.

    Args:
        spec: A spec, or the name to register.
        constructor: The network constructor (when ``spec`` is a name).
        blocks: Ordered ``(block_name, regex)`` pairs.
        preprocessing: ``"caffe"``, ``"tf"``, ``"torch"``, ``"builtin"`` or ``"none"``.
        default_size: Default input height/width.
        min_size: Minimum input height/width.
        unmatched: ``"previous"`` or ``"next"`` (see `kertransfer.backbones.blocks`).
        overwrite: Replace an existing registration of the same name.
        **kwargs: Other `BackboneSpec` fields.

    Returns:
        The registered spec.

    Raises:
        InvalidArgumentError: The name is taken and ``overwrite`` is False,
            or the spec fields are invalid.

    Examples:
        >>> import keras, kertransfer as kt
        >>> def tiny(include_top=False, weights=None, input_shape=(32, 32, 3)):
        ...     inputs = keras.Input(input_shape)
        ...     x = keras.layers.Conv2D(8, 3, name="c1")(inputs)
        ...     x = keras.layers.Conv2D(8, 3, name="c2")(x)
        ...     return keras.Model(inputs, x)
        >>> spec = kt.register_backbone("tiny_doc", tiny, blocks=[("b1", "^c1$"), ("b2", "^c2$")],
        ...                             has_imagenet=False, overwrite=True)
        >>> spec.block_names
        ['b1', 'b2']
    """
    if isinstance(spec, str):
        if constructor is None or not callable(constructor):
            raise InvalidTypeError(
                format_message(
                    "register_backbone needs a callable constructor when given a name.",
                    expected="constructor(include_top=False, weights=None, input_shape=...)",
                    received={"constructor": constructor},
                )
            )
        if not blocks:
            raise InvalidArgumentError(
                format_message(
                    "register_backbone needs the ordered blocks of the backbone.",
                    expected="blocks=[(block_name, layer_name_regex), ...]",
                    received={"blocks": blocks},
                )
            )
        default_size = check_int(default_size, "default_size", minimum=1)
        min_size = check_int(min_size, "min_size", minimum=1)
        try:
            spec = BackboneSpec(
                name=_normalize(spec),
                constructor=constructor,
                preprocessing=preprocessing,
                default_size=default_size,
                min_size=min_size,
                blocks=tuple(blocks),
                unmatched=unmatched,
                family=kwargs.pop("family", "custom"),
                **kwargs,
            )
        except ValueError as exc:
            raise InvalidArgumentError(
                format_message(str(exc), received={"name": spec})
            ) from None
    elif not isinstance(spec, BackboneSpec):
        raise InvalidTypeError(
            format_message(
                "register_backbone takes a BackboneSpec or a name with a constructor.",
                received={"spec": spec},
            )
        )
    if spec.name in _REGISTRY and not overwrite:
        raise InvalidArgumentError(
            format_message(
                f"A backbone named {spec.name!r} is already registered.",
                fix="Pass overwrite=True to replace it, or choose another name.",
                received={"name": spec.name},
            )
        )
    _REGISTRY[spec.name] = spec
    return spec


def get_backbone_spec(name: str) -> BackboneSpec:
    """Return the spec registered under ``name``.

    Raises:
        UnknownBackboneError: No such backbone (the message suggests close names).
    """
    if not isinstance(name, str):
        raise InvalidTypeError(
            format_message(
                "A backbone name must be a string.",
                received={"backbone": name},
            )
        )
    key = _normalize(name)
    if key not in _REGISTRY:
        hint = suggest(key, _REGISTRY) or "kertransfer.list_backbones() lists them."
        raise UnknownBackboneError(
            format_message(
                f"Unknown backbone {name!r}.",
                expected="a name from kertransfer.list_backbones() or a keras.Model",
                fix=hint,
                received={"backbone": name},
            )
        )
    return _REGISTRY[key]


def list_backbones(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Return the registered backbone names, sorted.

    Args:
        pattern: Optional shell-style filter, e.g. ``"efficientnet_*"``.
        family: Optional family filter, e.g. ``"resnet"``.

    Examples:
        >>> import kertransfer as kt
        >>> kt.list_backbones("resnet*_v2")
        ['resnet101_v2', 'resnet152_v2', 'resnet50_v2']
    """
    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if family:
        names = [n for n in names if _REGISTRY[n].family == family]
    return names


for _spec in (*application_specs(), *lite_specs(), *sequence_specs()):
    register_backbone(_spec)
