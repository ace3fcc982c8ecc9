"""The record written beside an export, ``kertransfer_export.json``: backbone, input
size, classes and decisions per head, training record, freeze configuration, the
parity check and the kertransfer, Keras and TensorFlow versions."""

from __future__ import annotations

import time
from typing import Any

import keras

from kertransfer.serving.formats import SIGNATURES, Plan
from kertransfer.serving.runtime import output_key
from kertransfer.version import __version__

__all__ = ["export_metadata"]


def _last_fit(model) -> dict | None:
    """The final epoch of the model's last ``fit`` (Keras keeps its History on the model)."""
    history = getattr(getattr(model, "history", None), "history", None)
    if not isinstance(history, dict) or not history:
        return None
    try:
        final = {k: float(v[-1]) for k, v in history.items() if len(v)}
        return {"epochs": max(len(v) for v in history.values()), "final": final}
    except (TypeError, ValueError, IndexError):
        return None


def export_metadata(plan: Plan, fmt: str, info: dict, extra: dict | None,
                    parity) -> dict[str, Any]:
    """The contents of ``kertransfer_export.json`` (``extra`` entries added last)."""
    model = plan.model
    training = info.get("training")
    if training is None:
        last = _last_fit(model)
        training = {"last_fit": last} if last is not None else None
    versions = {"kertransfer": __version__, "keras": keras.__version__}
    try:
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    except ImportError:  # pragma: no cover - TensorFlow is a dependency
        pass
    multi = plan.heads[0].name is not None
    sigmoid = [h for h in plan.heads if h.activation == "sigmoid"]
    threshold = ({h.name: h.threshold for h in sigmoid} if multi
                 else sigmoid[0].threshold) if sigmoid else None
    meta = {
        "format": fmt,
        "backbone": getattr(model, "backbone_name", "custom"),
        "input_size": [plan.height, plan.width],
        "input": "float32 RGB images [batch, H, W, 3] in 0-255",
        "classes": plan.class_names,
        "heads": [h.name for h in plan.heads] if plan.heads[0].name else None,
        "activation": {h.name: h.activation for h in plan.heads} if multi
        else plan.heads[0].activation,
        "decision": {h.name: h.decision for h in plan.heads} if multi
        else plan.heads[0].decision,
        "threshold": threshold,
        "preprocessing": getattr(model, "preprocessing", None),
        "freeze": getattr(model, "freeze_config", None),
        "bn": getattr(model, "bn_mode", None),
        "signatures": list(SIGNATURES) if fmt == "saved_model" else
        ([SIGNATURES[0]] if fmt == "tflite" else None),
        "outputs": [output_key(h.name, n) for h in plan.heads for n in
                    (h.outputs if fmt == "saved_model" else ("probabilities",))],
        "training": training,
        "source": info.get("source"),
        "parity": parity,
        "versions": versions,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta.update(extra or {})
    return meta
