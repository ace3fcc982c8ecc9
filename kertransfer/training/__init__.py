"""Training: fitting, BatchNorm recalibration, run folders."""

from kertransfer.training.batchnorm import batchnorm_layers, recalibrate_batchnorm
from kertransfer.training.run import (
    TrainResult,
    compile_for_transfer,
    evaluate_splits,
    loss_for,
    plot_history,
    save_run,
    train,
)
from kertransfer.training.schedules import OneCycle, SlantedTriangular, WarmupCosine

__all__ = [
    "OneCycle",
    "SlantedTriangular",
    "WarmupCosine",
    "TrainResult",
    "batchnorm_layers",
    "compile_for_transfer",
    "evaluate_splits",
    "loss_for",
    "plot_history",
    "recalibrate_batchnorm",
    "save_run",
    "train",
]
