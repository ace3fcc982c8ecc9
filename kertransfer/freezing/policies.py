"""Freeze policies: which backbone layers stay frozen.

A policy decides, for each layer of a backbone, whether it is frozen. Layers
are grouped into the backbone's ordered blocks (see
`kertransfer.backbones.blocks`), so depths count blocks, not layers.
Policies compose: ``FreezeBlocks(4) + FreezeBatchNorm()`` freezes what either
freezes. Every policy has ``get_config``; `policy_from_config` revives it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from kertransfer.backbones.blocks import is_batchnorm
from kertransfer.errors import FreezeError, InvalidTypeError, format_message, suggest
from kertransfer.validation import check_int, check_number, is_bool, is_int, is_number


@dataclasses.dataclass
class FreezeContext:
    """What a policy sees: the layers, their block index, and the block names."""

    layers: list
    block_of: list[int]
    block_names: list[str]

    @property
    def num_blocks(self) -> int:
        return len(self.block_names)


class FreezePolicy:
    """Base class. Subclasses implement `frozen` and `get_config`."""

    def frozen(self, ctx: FreezeContext) -> list[bool]:
        """Return, for each layer in ``ctx.layers``, whether it is frozen."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FreezePolicy:
        return cls(**config)

    def __add__(self, other: FreezePolicy) -> Compose:
        return Compose([self, other])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(repr(self))


class FreezeAll(FreezePolicy):
    """Freeze the whole backbone (train the head only)."""

    def frozen(self, ctx):
        return [True] * len(ctx.layers)


class FreezeNone(FreezePolicy):
    """Freeze nothing."""

    def frozen(self, ctx):
        return [False] * len(ctx.layers)


class FreezeBlocks(FreezePolicy):
    """Freeze the first ``n`` blocks from the bottom (input side).

    Args:
        n: Number of blocks to freeze, 0 to the backbone's block count.
    """

    def __init__(self, n: int):
        self.n = check_int(n, "freeze", minimum=0, error=FreezeError,
                           fix="An integer freeze is a depth: the blocks frozen from the bottom.")

    def frozen(self, ctx):
        if self.n > ctx.num_blocks:
            raise FreezeError(
                format_message(
                    f"Cannot freeze {self.n} blocks: the backbone has {ctx.num_blocks} "
                    f"({', '.join(ctx.block_names)}).",
                    expected=f"a depth from 0 to {ctx.num_blocks}, or 'all'",
                    received={"freeze": self.n},
                )
            )
        return [b < self.n for b in ctx.block_of]

    def get_config(self):
        return {"n": self.n}


class FreezeFraction(FreezePolicy):
    """Freeze the bottom ``fraction`` of the blocks (rounded to whole blocks).

    Args:
        fraction: A number in [0, 1].
    """

    def __init__(self, fraction: float):
        self.fraction = check_number(fraction, "freeze", minimum=0, maximum=1, error=FreezeError,
                                     fix="A fractional freeze, in [0, 1], is the share of blocks "
                                         "frozen from the bottom.")

    def frozen(self, ctx):
        n = int(round(self.fraction * ctx.num_blocks))
        return [b < n for b in ctx.block_of]

    def get_config(self):
        return {"fraction": self.fraction}


class FreezeThrough(FreezePolicy):
    """Freeze every block from the bottom up to and including ``block``.

    Args:
        block: A block name of the backbone (``kt.trainable_summary`` lists them).
    """

    def __init__(self, block: str):
        self.block = str(block)

    def frozen(self, ctx):
        if self.block not in ctx.block_names:
            hint = suggest(self.block, ctx.block_names)
            raise FreezeError(
                format_message(
                    f"Unknown freeze policy or block name {self.block!r}.",
                    expected="'all', 'none', a number of blocks, a fraction, a policy object, "
                    f"or a block name of this backbone ({', '.join(ctx.block_names)})",
                    fix=hint or None,
                    received={"freeze": self.block},
                )
            )
        last = ctx.block_names.index(self.block)
        return [b <= last for b in ctx.block_of]

    def get_config(self):
        return {"block": self.block}


class FreezeBatchNorm(FreezePolicy):
    """Freeze every BatchNormalization layer (keeps them in inference mode)."""

    def frozen(self, ctx):
        return [is_batchnorm(layer) for layer in ctx.layers]


class FreezePattern(FreezePolicy):
    """Freeze every layer whose name matches a regular expression.

    Args:
        pattern: A regex searched in each layer name.
    """

    def __init__(self, pattern: str):
        try:
            self._rx = re.compile(pattern)
        except re.error as exc:
            raise FreezeError(
                format_message(f"Invalid regular expression ({exc}).",
                               received={"pattern": pattern})
            ) from None
        self.pattern = pattern

    def frozen(self, ctx):
        return [bool(self._rx.search(layer.name)) for layer in ctx.layers]

    def get_config(self):
        return {"pattern": self.pattern}


class Compose(FreezePolicy):
    """Freeze what any of ``policies`` freezes.

    Args:
        policies: Policies or shorthands (see `resolve_policy`).
    """

    def __init__(self, policies: Sequence[Any]):
        flat: list[FreezePolicy] = []
        for p in policies:
            p = resolve_policy(p)
            flat.extend(p.policies if isinstance(p, Compose) else [p])
        self.policies = flat

    def frozen(self, ctx):
        out = [False] * len(ctx.layers)
        for p in self.policies:
            out = [a or b for a, b in zip(out, p.frozen(ctx))]
        return out

    def get_config(self):
        return {"policies": [policy_to_config(p) for p in self.policies]}

    def __repr__(self) -> str:
        return " + ".join(repr(p) for p in self.policies) or "Compose([])"

    @classmethod
    def from_config(cls, config):
        return cls([policy_from_config(c) for c in config["policies"]])


POLICIES = {
    cls.__name__: cls
    for cls in (FreezeAll, FreezeNone, FreezeBlocks, FreezeFraction, FreezeThrough,
                FreezeBatchNorm, FreezePattern, Compose)
}


def policy_to_config(policy: FreezePolicy) -> dict[str, Any]:
    """Serialize a policy to ``{"class_name": ..., "config": ...}``."""
    return {"class_name": type(policy).__name__, "config": policy.get_config()}


def policy_from_config(config: dict[str, Any]) -> FreezePolicy:
    """Revive a policy serialized by `policy_to_config`."""
    cls = POLICIES.get(config.get("class_name", ""))
    if cls is None:
        raise FreezeError(
            format_message("Unknown freeze policy class.", expected=f"one of {sorted(POLICIES)}",
                           received={"config": config})
        )
    return cls.from_config(config.get("config", {}))


def resolve_policy(freeze: Any) -> FreezePolicy:
    """Turn a shorthand into a policy.

    ``"all"``, ``"none"``, an int (blocks from the bottom), a float in [0, 1]
    (fraction of blocks), a block name, a list of these (composed), or a
    `FreezePolicy`.
    """
    if isinstance(freeze, FreezePolicy):
        return freeze
    if freeze is None:
        return FreezeNone()
    if is_bool(freeze):
        raise FreezeError(
            format_message(
                "A freeze policy cannot be a bool.",
                expected="'all', 'none', a number of blocks, a fraction in [0, 1], a block name "
                "or a FreezePolicy",
                received={"freeze": freeze},
            )
        )
    if is_int(freeze):
        return FreezeBlocks(freeze)
    if is_number(freeze):
        return FreezeFraction(freeze)
    if isinstance(freeze, str):
        key = freeze.strip().lower()
        if key == "all":
            return FreezeAll()
        if key == "none":
            return FreezeNone()
        if key in ("bn", "batchnorm"):
            return FreezeBatchNorm()
        return FreezeThrough(freeze.strip())
    if isinstance(freeze, (list, tuple)):
        return Compose(list(freeze))
    raise InvalidTypeError(
        format_message(
            "Unsupported freeze policy type.",
            expected="'all', 'none', an int, a float, a block name, a list, or a FreezePolicy",
            received={"freeze": freeze},
        )
    )
