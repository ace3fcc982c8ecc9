"""`trainable_summary`: what trains, block by block."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from kertransfer.backbones.blocks import is_batchnorm
from kertransfer.freezing.protocol import all_batchnorm, block_context, require_transfer_model


def _count(variables) -> int:
    total = 0
    for v in variables:
        n = 1
        for d in v.shape:
            n *= int(d)
        total += n
    return total


@dataclasses.dataclass
class BlockRow:
    """One row of a `TrainableSummary`."""

    block: str
    layers: int
    params: int
    trainable_params: int
    bn: str
    state: str = "-"


@dataclasses.dataclass
class TrainableSummary:
    """Per-block table of a transfer model: layers, parameters, BatchNorm mode."""

    rows: list[BlockRow]
    backbone: str
    bn_mode: str
    freeze: dict

    @property
    def trainable_params(self) -> int:
        return sum(r.trainable_params for r in self.rows)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def frozen_text(self) -> str:
        """Which blocks are frozen, read from the layers (not from the stored policy).

        ``"all blocks train"``, ``"all blocks frozen"``, ``"bottom 3 of 5 blocks
        frozen (through conv4)"``, or the frozen and partial blocks by name.
        """
        blocks = [r for r in self.rows if r.block != "head" and r.state != "-"]
        states = [r.state for r in blocks]
        if not blocks or all(s == "trainable" for s in states):
            return "all blocks train"
        if all(s == "frozen" for s in states):
            return "all blocks frozen"
        k = next(i for i, s in enumerate(states) if s != "frozen")
        if k and all(s == "trainable" for s in states[k:]):
            return f"bottom {k} of {len(blocks)} blocks frozen (through {blocks[k - 1].block})"
        parts = [f"{kind}: " + ", ".join(r.block for r in blocks if r.state == kind)
                 for kind in ("frozen", "partial") if kind in states]
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {
            "backbone": self.backbone,
            "bn": self.bn_mode,
            "freeze": self.freeze,
            "frozen": self.frozen_text,
            "blocks": [dataclasses.asdict(r) for r in self.rows],
        }

    def __str__(self) -> str:
        head = ("block", "layers", "params", "trainable", "state", "batchnorm")
        body = [
            (r.block, str(r.layers), f"{r.params:,}", f"{r.trainable_params:,}", r.state, r.bn)
            for r in self.rows
        ]
        total = ("total", str(sum(r.layers for r in self.rows)), f"{self.params:,}",
                 f"{self.trainable_params:,}", "", "")
        widths = [max(len(row[i]) for row in [head, *body, total]) for i in range(len(head))]

        def fmt(row):
            return "  ".join(
                cell.ljust(w) if i in (0, 4, 5) else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths))
            )

        rule = "-" * len(fmt(head))
        title = f"{self.backbone}  {self.frozen_text}  bn={self.bn_mode}"
        return "\n".join([title, fmt(head), rule, *map(fmt, body), rule, fmt(total)])


def _bn_state(layers) -> str:
    bns = [b for layer in layers for b in all_batchnorm(layer)]
    if not bns:
        return "-"
    training = sum(1 for b in bns if b.trainable)
    if training == 0:
        return "inference"
    if training == len(bns):
        return "training"
    return f"{training}/{len(bns)} training"


def _state(layers, enabled: bool) -> str:
    """frozen / trainable / partial, not counting BatchNorm (its mode has its own column)."""
    main = [layer for layer in layers if layer.weights and not is_batchnorm(layer)]
    if not main:
        main = [layer for layer in layers if layer.weights]
    if not main:
        return "-"
    on = [enabled and bool(layer.trainable_weights) for layer in main]
    if not any(on):
        return "frozen"
    return "trainable" if all(on) else "partial"


def trainable_summary(model, print_fn: Callable[[str], None] | None = print) -> TrainableSummary:
    """Print and return a per-block table of what trains.

    Columns: block, layers, parameters, trainable parameters, state
    (frozen / trainable / partial) and BatchNorm mode (inference: the layer
    uses its moving statistics; training: batch statistics, updated).

    Args:
        model: A model from ``build_transfer_model``.
        print_fn: Where to print; ``None`` prints nothing.

    Returns:
        A `TrainableSummary` (``str()`` gives the table).
    """
    require_transfer_model(model, "kertransfer.trainable_summary")
    ctx = block_context(model)
    groups: list[list] = [[] for _ in ctx.block_names]
    for layer, b in zip(ctx.layers, ctx.block_of):
        groups[b].append(layer)
    backbone_on = model.backbone.trainable
    rows = []
    for name, layers in zip(ctx.block_names, groups):
        weights = [w for layer in layers for w in layer.weights]
        trainable = [w for layer in layers for w in layer.trainable_weights] if backbone_on else []
        rows.append(BlockRow(name, len(layers), _count(weights), _count(trainable),
                             _bn_state(layers) if backbone_on else
                             ("inference" if any(is_batchnorm(x) for x in layers) else "-"),
                             _state(layers, backbone_on)))
    head_layers = [layer for layer in model.layers
                   if layer is not model.backbone and layer.weights]
    rows.append(BlockRow("head", len(head_layers),
                         _count([w for layer in head_layers for w in layer.weights]),
                         _count([w for layer in head_layers for w in layer.trainable_weights]),
                         _bn_state(head_layers), _state(head_layers, True)))
    summary = TrainableSummary(rows, getattr(model, "backbone_name", model.backbone.name),
                               getattr(model, "bn_mode", "?"), getattr(model, "freeze_config", {}))
    if print_fn is not None:
        print_fn(str(summary))
    return summary
