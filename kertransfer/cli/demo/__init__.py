"""The offline demos behind ``kertransfer demo``.

- ``task="fashion"`` (the default, `kertransfer.cli.demo.fashion`): real ImageNet
  weights (MobileNet v1, installed offline from the ``offline-weights`` extra)
  transferred to Fashion-MNIST with 10 labels per class, against a linear
  probe, the same network from scratch and raw pixels.
- ``task="digits"`` (`kertransfer.cli.demo.digits`): a backbone pretrained from
  random weights on the embedded digits, transferred to digits_m.

Both end by exporting the transferred model for TF Serving and running
``kertransfer predict`` on held-out images saved as PNG files.
"""

from __future__ import annotations

import pathlib
import tempfile
import time
from collections.abc import Sequence

from kertransfer._choices import DEMO_TASKS
from kertransfer.cli.demo import digits, fashion
from kertransfer.cli.demo.common import format_table, save, say, ship
from kertransfer.cli.demo.digits import IMAGE_SIZE, load_target, pretrain_source
from kertransfer.errors import InvalidArgumentError, format_message

TASKS = DEMO_TASKS

__all__ = ["TASKS", "IMAGE_SIZE", "format_table", "load_target", "pretrain_source",
           "run_demo", "ship"]


def run_demo(out: str = "runs/demo", seeds: Sequence[int] = (0,), labels_per_class: int = 10,
             backbone: str | None = None, quick: bool = False, task: str = "fashion",
             verbose: int = 1) -> dict:
    """Run a demo and save it to ``out``; returns the results.

    Args:
        out: Run folder (``results.json``, ``table.txt``, the transferred
            ``model.keras`` with its history and learning curve, ``serving/``
            and ``samples/``).
        seeds: Seeds to run; the table shows mean and sd over them.
        labels_per_class: Labelled target examples per class.
        backbone: A registry name (default: ``mobilenet`` for ``"fashion"``,
            ``mobilenet_v3_small`` for ``"digits"``).
        quick: Fewer epochs (and, for ``fashion``, 300 test images instead of
            1,000), for a smoke run.
        task: ``"fashion"`` (ImageNet weights to Fashion-MNIST) or
            ``"digits"`` (digits to digits_m).
        verbose: 0 silent, 1 steps, 2 also per-epoch lines.

    Returns:
        ``{"table": str, "per_seed": [...], "out": path, "export": version folder}``.
    """
    if task not in TASKS:
        raise InvalidArgumentError(format_message("Unknown demo.", expected=f"one of {TASKS}",
                                                  received={"task": task}))
    start = time.perf_counter()
    if task == "fashion":
        per_seed, header, title, config = fashion.run(
            seeds, backbone=backbone, labels_per_class=labels_per_class, quick=quick,
            verbose=verbose)
    else:
        with tempfile.TemporaryDirectory(prefix="kertransfer-demo-") as tmp:
            per_seed, header, title, config = digits.run(
                seeds, pathlib.Path(tmp), backbone=backbone, labels_per_class=labels_per_class,
                quick=quick, verbose=verbose)
    table = format_table(per_seed, title)
    path = save(per_seed, out, header, table, config, verbose)
    last = per_seed[-1]
    version = ship(last["_transfer_model"], last["_target"], path, verbose=verbose)
    say(f"Done ({time.perf_counter() - start:.0f}s in all)", verbose)
    results = [{k: v for k, v in r.items() if not k.startswith("_")} for r in per_seed]
    return {"table": table, "per_seed": results, "out": path, "export": version}
