"""`BackboneSpec`: everything kertransfer needs to know about one backbone."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

PREPROCESSING_MODES = ("caffe", "tf", "torch", "builtin", "none")
UNMATCHED_RULES = ("previous", "next")
INPUT_KINDS = ("image", "sequence")


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """Description of a backbone family member.

    A spec is data: how to construct the network, what its inputs must look
    like, and how its layers group into ordered *blocks* (stem, stages, top).

    Args:
        name: Registry name, e.g. ``"resnet50"``.
        constructor: A callable ``f(include_top, weights, input_shape, **kw)``
            returning a ``keras.Model``, or a dotted path to one
            (``"keras.applications.ResNet50"``), resolved lazily.
        preprocessing: What the backbone expects of raw 0-255 RGB input:
            ``"caffe"`` (BGR, ImageNet mean subtracted), ``"tf"`` (scaled to
            [-1, 1]), ``"torch"`` (scaled to [0, 1], ImageNet mean/std),
            ``"builtin"`` (the network rescales inside) or ``"none"``.
        default_size: Input height/width the weights were trained at.
        min_size: Smallest input height/width the network accepts.
        blocks: Ordered ``(block_name, regex)`` pairs. A layer belongs to the
            block whose pattern matches its name (``re.search``).
        unmatched: Where a layer that matches no pattern goes: ``"previous"``
            joins the block of the layer before it (for auto-named shortcut
            and activation layers that follow their block), ``"next"`` joins
            the block of the next matched layer (for architectures whose
            named layer closes a block, like Inception's ``mixedN``).
        family: Family name, for tables.
        constructor_kwargs: Extra constructor keyword arguments.
        has_imagenet: Whether ``weights="imagenet"`` is available.
        inputs: ``"image"`` (``input_shape`` is ``(height, width, channels)``)
            or ``"sequence"`` (``(timesteps, features)`` or ``(timesteps,)``
            token ids; ``default_size`` and ``min_size`` count timesteps).
    """

    name: str
    constructor: Callable[..., Any] | str
    preprocessing: str
    default_size: int
    min_size: int
    blocks: tuple[tuple[str, str], ...]
    unmatched: str = "previous"
    family: str = ""
    constructor_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    has_imagenet: bool = True
    inputs: str = "image"

    def __post_init__(self) -> None:
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ValueError(
                f"preprocessing must be one of {PREPROCESSING_MODES}; got {self.preprocessing!r}"
            )
        if self.inputs not in INPUT_KINDS:
            raise ValueError(f"inputs must be one of {INPUT_KINDS}; got {self.inputs!r}")
        if self.unmatched not in UNMATCHED_RULES:
            raise ValueError(f"unmatched must be one of {UNMATCHED_RULES}; got {self.unmatched!r}")
        object.__setattr__(self, "blocks", tuple((str(n), str(p)) for n, p in self.blocks))

    @property
    def block_names(self) -> list[str]:
        """Names of the blocks, bottom (input side) first."""
        return [name for name, _ in self.blocks]

    def resolve_constructor(self) -> Callable[..., Any]:
        """Return the constructor callable (importing a dotted path)."""
        if callable(self.constructor):
            return self.constructor
        module_name, _, attr = self.constructor.rpartition(".")
        return getattr(importlib.import_module(module_name), attr)

    def construct(self, input_shape: tuple[int, ...] | None, weights: str | None = None,
                  include_top: bool = False) -> Any:
        """Build the headless network (or, with ``include_top``, the whole classifier;
        ``input_shape=None`` is then the family's default size)."""
        ctor = self.resolve_constructor()
        return ctor(
            include_top=include_top,
            weights=weights,
            input_shape=None if input_shape is None else tuple(input_shape),
            **dict(self.constructor_kwargs),
        )
