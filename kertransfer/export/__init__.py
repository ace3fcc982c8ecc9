"""Export for serving, and predictions from an export.

``kertransfer.export`` is both this package and its main function:
``kt.export(model, "serving/flowers", class_names=names)`` is
`kertransfer.export.export`. `predict` runs an export (or a ``.keras``
model, or a run folder) on image files.
"""

import sys as _sys
import types as _types

from kertransfer.export.core import TOLERANCES, check_parity, export
from kertransfer.export.formats import FORMATS, SIGNATURES
from kertransfer.export.predict import format_predictions, load_predictor, predict

__all__ = ["FORMATS", "SIGNATURES", "TOLERANCES", "check_parity", "export",
           "format_predictions", "load_predictor", "predict"]


class _CallableModule(_types.ModuleType):
    """Lets ``kertransfer.export(...)`` call `export` (the package keeps its members)."""

    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
