"""Keras callbacks for transfer learning."""

from kertransfer.training.unfreezing import GradualUnfreezing, StagedUnfreezing

__all__ = ["GradualUnfreezing", "StagedUnfreezing"]
