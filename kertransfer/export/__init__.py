"""Export for serving."""

from kertransfer.export.saved_model import SIGNATURES, export_saved_model

__all__ = ["SIGNATURES", "export_saved_model"]
