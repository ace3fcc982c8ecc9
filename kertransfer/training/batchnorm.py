"""BatchNorm recalibration: exact statistics from a pass over the data.

With small data, BatchNorm's moving averages (momentum 0.99) lag far behind
the weights: a network can fit its training set and still score chance in
inference mode. Recalibration resets the moving statistics of the chosen
BatchNorm layers and recomputes them as the plain average over batches of
the data (cumulative momentum ``1 - 1/k`` at batch ``k``), leaving every
other weight untouched. On target-domain data the same operation is AdaBN.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kertransfer._log import print_msg
from kertransfer.backbones.blocks import is_batchnorm
from kertransfer.data.batches import as_batches, iterate, num_batches
from kertransfer.errors import InvalidArgumentError, format_message
from kertransfer.freezing.inference import inference_except
from kertransfer.validation import check_choice, check_int


def batchnorm_layers(model, which: str = "all") -> list:
    """Return the BatchNorm layers of ``model`` at any depth.

    Args:
        model: A Keras model.
        which: ``"all"`` or ``"trainable"`` (only those that train).
    """
    check_choice(which, "layers", ("all", "trainable"), what="BatchNorm selection")
    found = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
             if is_batchnorm(layer)]
    if which == "trainable":
        found = [layer for layer in found if layer.trainable]
    return found


def recalibrate_batchnorm(model, data: Any, *, layers: str = "all", steps: int | None = None,
                          batch_size: int | None = None, verbose: int = 0) -> int:
    """Recompute BatchNorm moving statistics from a pass over ``data``.

    Example::

        kt.recalibrate_batchnorm(model, x_train, batch_size=64)   # images alone
        kt.recalibrate_batchnorm(model, bundle)   # its train split, unaugmented

    Args:
        model: A Keras model.
        data: Images in any form kertransfer reads (see
            `kertransfer.data.adapter`): numpy images ``x``, ``(x, y)``
            arrays, a ``tf.data.Dataset`` or ``keras.utils.PyDataset`` of
            batches, a list of batches, or a `DataBundle`/`ArrayData` (its
            train split, unaugmented). Only images are used. Use batches of
            32 or more for stable variance estimates.
        layers: ``"all"`` BatchNorm layers or only the ``"trainable"`` ones.
        steps: Stop after this many batches (default: the whole pass).
        batch_size: Batch size for arrays (default 32) and for a bundle's
            unaugmented split (default the bundle's); batched data keeps its own.
        verbose: A progress bar over the pass, then how many layers and
            batches were used.

    Returns:
        The number of batches used.

    Raises:
        InvalidTypeError: ``data`` is not a form kertransfer reads.
        InvalidArgumentError: ``data`` yielded no batch.
    """

    steps = check_int(steps, "steps", minimum=1, allow_none=True)
    batches = as_batches(data, "data", images_only=True, batch_size=batch_size)
    bns = batchnorm_layers(model, layers)
    if not bns:
        return 0
    saved = [(bn.trainable, bn.momentum) for bn in bns]
    for bn in bns:
        bn.moving_mean.assign(ops.zeros(bn.moving_mean.shape, bn.moving_mean.dtype))
        bn.moving_variance.assign(ops.zeros(bn.moving_variance.shape, bn.moving_variance.dtype))
    # Only the chosen BN layers run in training mode (a BN layer uses batch
    # statistics when called with training=True and its own trainable flag is
    # on); every other layer, dropout included, runs in inference mode, and no
    # optimizer step runs, so no other weight changes.
    count = 0
    with inference_except(model, bns):
        try:
            for bn in bns:
                bn.trainable = True
            total = num_batches(batches)
            total = steps if total is None else min(total, steps or total)
            bar = keras.utils.Progbar(total, unit_name="batch") if verbose else None
            for x in iterate(batches):
                count += 1
                if bar is not None:
                    bar.update(count)
                for bn in bns:
                    bn.momentum = 1.0 - 1.0 / count
                model(x, training=True)
                if steps is not None and count >= steps:
                    break
        finally:
            for bn, (was_trainable, momentum) in zip(bns, saved):
                bn.trainable = was_trainable
                bn.momentum = momentum
    if count == 0:
        raise InvalidArgumentError(
            format_message("recalibrate_batchnorm got no batch from the data.",
                           expected="a non-empty dataset of image batches",
                           received={"data": type(data).__name__})
        )
    if verbose:
        print_msg(f"Recalibrated {len(bns)} BatchNorm layers on {count} batches.")
    return count
