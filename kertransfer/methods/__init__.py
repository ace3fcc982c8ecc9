"""Transfer methods for domain shift and forgetting.

- Loss terms added to any model's training loss with `with_regularizers`:
  `L2SP` (pull to the pretrained weights), `EWC` (elastic weight
  consolidation), `LwF` (learning without forgetting); a new one is a small
  `Term` subclass.
- Unsupervised domain adaptation with `adapt`: ``"adabn"`` (`adabn`),
  ``"dann"`` (gradient reversal, `GradientReversal`) and ``"coral"``
  (`coral_loss`).
"""

from kertransfer.methods.adaptation import (
    METHODS,
    GradientReversal,
    adabn,
    adapt,
    coral_loss,
    dann_lambda,
)
from kertransfer.methods.fisher import EWC, fisher_diagonal
from kertransfer.methods.lwf import LwF, add_head, fit_two_heads, learn_without_forgetting
from kertransfer.methods.terms import (
    L2SP,
    Term,
    parameters,
    regularizer_terms,
    remove_regularizers,
    snapshot,
    with_regularizers,
)

__all__ = ["EWC", "L2SP", "METHODS", "GradientReversal", "LwF", "Term", "adabn", "adapt",
           "add_head", "coral_loss", "dann_lambda", "fisher_diagonal", "fit_two_heads",
           "learn_without_forgetting", "parameters", "regularizer_terms", "remove_regularizers",
           "snapshot", "with_regularizers"]
