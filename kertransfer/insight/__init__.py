"""Insight: what to expect of a transfer, and what a trained model does.

- Before training: transferability scores and `rank_backbones`
  (`kertransfer.insight.ranking`, the scores in `kertransfer.insight.scores`: LogME,
  LEEP, H-score) and `lint`, the
  classic fine-tuning bugs found on a model (`kertransfer.insight.linting`).
- After training: Grad-CAM heatmaps (`grad_cam`, `save_overlays`;
  `kertransfer.insight.gradcam`) and run reports (`run_report`, the
  confusion matrix and per-class accuracy; `kertransfer.insight.report`).

`rank_backbones` and `lint` are also ``kertransfer.rank_backbones`` and
``kertransfer.lint``.
"""

from kertransfer.insight.gradcam import GradCamResult, grad_cam, save_overlays
from kertransfer.insight.linting import RULES, Finding, LintReport, lint
from kertransfer.insight.ranking import Ranking, rank_backbones
from kertransfer.insight.report import (
    confusion_matrix,
    evaluate_run,
    per_class_accuracy,
    plot_confusion_matrix,
    plot_per_class_accuracy,
    run_report,
)
from kertransfer.insight.scores import METRICS, h_score, leep, logme, logme_evidence

__all__ = ["METRICS", "RULES", "Finding", "GradCamResult", "LintReport", "Ranking",
           "confusion_matrix", "evaluate_run", "grad_cam", "h_score", "leep", "lint", "logme",
           "logme_evidence", "per_class_accuracy", "plot_confusion_matrix",
           "plot_per_class_accuracy", "rank_backbones", "run_report", "save_overlays"]
