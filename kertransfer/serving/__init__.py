"""Serving: exports a model server loads, and predictions from them.

`export` (also ``kt.export``) writes a model as a SavedModel, TFLite, ONNX
or ``.keras`` version folder, checked in a fresh process before it appears;
`predict` runs an export (or a ``.keras`` model, or a run folder) on image
files.
"""

from kertransfer.serving.core import check_parity, export
from kertransfer.serving.formats import FORMATS, SIGNATURES
from kertransfer.serving.plan import TOLERANCES
from kertransfer.serving.predict import format_predictions, load_predictor, predict

__all__ = ["FORMATS", "SIGNATURES", "TOLERANCES", "check_parity", "export",
           "format_predictions", "load_predictor", "predict"]
