"""Training: fitting, BatchNorm recalibration, run folders."""

from kertransfer.training.batchnorm import batchnorm_layers, recalibrate_batchnorm
from kertransfer.training.feature_cache import train_head_on_features
from kertransfer.training.feature_store import FeatureCache, StoredFeatures, default_cache_dir
from kertransfer.training.fine_tune import fine_tune
from kertransfer.training.lr_find import LRFindResult, lr_find
from kertransfer.training.probe import ProbeFit, fit_linear_probe, probe_head
from kertransfer.training.results import FineTuneResult, RunResult, TrainResult
from kertransfer.training.run import (
    compile_for_transfer,
    evaluate_splits,
    loss_for,
    save_run,
    train,
)
from kertransfer.training.run_folder import plot_history
from kertransfer.training.schedules import OneCycle, SlantedTriangular, WarmupCosine

__all__ = [
    "FeatureCache",
    "StoredFeatures",
    "default_cache_dir",
    "train_head_on_features",
    "LRFindResult",
    "ProbeFit",
    "fit_linear_probe",
    "probe_head",
    "lr_find",
    "OneCycle",
    "SlantedTriangular",
    "WarmupCosine",
    "TrainResult",
    "FineTuneResult",
    "RunResult",
    "batchnorm_layers",
    "compile_for_transfer",
    "fine_tune",
    "evaluate_splits",
    "loss_for",
    "plot_history",
    "recalibrate_batchnorm",
    "save_run",
    "train",
]
