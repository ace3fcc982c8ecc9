"""Assigning the layers of a backbone to its ordered blocks.

The rule, used for every backbone:

1. A layer belongs to the block whose pattern matches its name
   (``re.search``). A name matching two blocks' patterns is an error.
2. A layer matching no pattern (auto-named activations, adds, shortcut
   convolutions whose names depend on Keras' global counters) joins the block
   of the layer before it (``unmatched="previous"``), or of the next matched
   layer (``unmatched="next"``). Layers before the first match join the first
   block; layers after the last match join the last block.

For a ``keras.Model`` that is not in the registry, `blocks_from_model`
derives the patterns: each top-level layer that owns weights, except
normalization layers, opens a block named after it; every other layer
(inputs, activations, pooling, normalization, dropout) joins the block before
it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kertransfer.errors import InvalidArgumentError, format_message

_NORMALIZATION_TYPES = (
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "UnitNormalization",
    "SyncBatchNormalization",
    "Normalization",
    "RMSNormalization",
)


def _compile(blocks: Sequence[tuple[str, str]]) -> list[tuple[str, re.Pattern]]:
    return [(name, re.compile(pattern)) for name, pattern in blocks]


def match_layers(layers, blocks: Sequence[tuple[str, str]]) -> list[int | None]:
    """Return, for each layer, the index of the block its name matches, or None."""
    compiled = _compile(blocks)
    out: list[int | None] = []
    for layer in layers:
        hits = [i for i, (_, rx) in enumerate(compiled) if rx.search(layer.name)]
        if len(hits) > 1:
            names = [compiled[i][0] for i in hits]
            raise InvalidArgumentError(
                format_message(
                    f"Layer {layer.name!r} matches the patterns of several blocks {names}.",
                    expected="block patterns that match each layer name at most once",
                    received={"blocks": list(blocks)},
                )
            )
        out.append(hits[0] if hits else None)
    return out


def assign_blocks(
    layers, blocks: Sequence[tuple[str, str]], unmatched: str = "previous"
) -> list[int]:
    """Assign every layer to a block index by the module's rule.

    Args:
        layers: The backbone's layers in order (``model.layers``).
        blocks: Ordered ``(name, regex)`` pairs.
        unmatched: ``"previous"`` or ``"next"``.

    Returns:
        A block index for each layer.
    """
    matched = match_layers(layers, blocks)
    n = len(matched)
    out = [0] * n
    if unmatched == "next":
        current = len(blocks) - 1
        for i in range(n - 1, -1, -1):
            if matched[i] is not None:
                current = matched[i]
            out[i] = current
        # Layers before the first match already got the first matched block.
    else:
        first = next((m for m in matched if m is not None), 0)
        current = first
        for i in range(n):
            if matched[i] is not None:
                current = matched[i]
            out[i] = current
    return out


def group_layers(layers, blocks: Sequence[tuple[str, str]], unmatched: str = "previous"):
    """Return ``[(block_name, [layers...]), ...]`` in block order."""
    layers = list(layers)
    index = assign_blocks(layers, blocks, unmatched)
    groups: list[tuple[str, list]] = [(name, []) for name, _ in blocks]
    for layer, i in zip(layers, index):
        groups[i][1].append(layer)
    return groups


def check_blocks(layers, blocks: Sequence[tuple[str, str]], unmatched: str = "previous") -> None:
    """Check that the blocks cover the layers in order, each block non-empty.

    Raises:
        InvalidArgumentError: A block matches no layer, or matched layers are
            out of block order.
    """
    layers = list(layers)
    matched = match_layers(layers, blocks)
    seen = {m for m in matched if m is not None}
    empty = [blocks[i][0] for i in range(len(blocks)) if i not in seen]
    if empty:
        raise InvalidArgumentError(
            format_message(
                f"Blocks {empty} match no layer of the backbone.",
                expected="every block pattern to match at least one layer name",
                received={"blocks": list(blocks)},
            )
        )
    last = -1
    for layer, m in zip(layers, matched):
        if m is None:
            continue
        if m < last:
            raise InvalidArgumentError(
                format_message(
                    f"Layer {layer.name!r} of block {blocks[m][0]!r} comes after a layer of "
                    f"block {blocks[last][0]!r}.",
                    expected="blocks listed in the order their layers appear in the model",
                    received={"blocks": list(blocks)},
                )
            )
        last = m


def is_normalization(layer) -> bool:
    """Whether a layer is a normalization layer (by class name, any subclass)."""
    return any(cls.__name__ in _NORMALIZATION_TYPES for cls in type(layer).__mro__)


def is_batchnorm(layer) -> bool:
    """Whether a layer keeps BatchNorm moving statistics."""
    return any("BatchNormalization" in cls.__name__ for cls in type(layer).__mro__)


def blocks_from_model(model) -> tuple[tuple[str, str], ...]:
    """Derive block patterns for a model not in the registry (see module doc)."""
    blocks = []
    for layer in model.layers:
        if layer.weights and not is_normalization(layer):
            blocks.append((layer.name, "^" + re.escape(layer.name) + "$"))
    if not blocks:
        raise InvalidArgumentError(
            format_message(
                "The backbone has no layer with weights, so it has no blocks to freeze.",
                expected="a keras.Model with at least one layer that owns weights",
                received={"backbone": getattr(model, "name", model)},
            )
        )
    return tuple(blocks)
