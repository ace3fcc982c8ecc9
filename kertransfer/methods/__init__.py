"""Transfer methods for domain shift and forgetting.

- Loss terms added to any model's training loss with `with_regularizers`:
  `L2SP` (pull to the pretrained weights), `EWC` (elastic weight
  consolidation), `LwF` (learning without forgetting); a new one is a small
  `Term` subclass.
- Unsupervised domain adaptation with `adapt`: ``"adabn"`` (`adabn`),
  ``"dann"`` (gradient reversal, `GradientReversal`) and ``"coral"``
  (`coral_loss`).
- Pretraining a backbone on a source task with `pretrain` (also
  ``kertransfer.pretrain``): ``"supervised"``, ``"rotation"``, ``"simclr"``
  or ``"autoencoder"``.
- Episodic meta-training of a backbone's features with `meta_train` (also
  ``kertransfer.methods.fewshot.meta_train``): prototypical networks on N-way
  K-shot episodes of base classes.
"""

from kertransfer.methods import fewshot
from kertransfer.methods.adaptation import (
    METHODS,
    AdaptResult,
    GradientReversal,
    adabn,
    adapt,
    coral_loss,
    dann_lambda,
)
from kertransfer.methods.fewshot import EpisodeLogits, MetaTrainResult, meta_train
from kertransfer.methods.fisher import EWC, fisher_diagonal
from kertransfer.methods.lwf import LwF, add_head, fit_two_heads, learn_without_forgetting
from kertransfer.methods.pretext import (
    TASKS,
    PretextModel,
    PretrainResult,
    nt_xent,
    pretrain,
    rotate_batch,
    simclr_augmentation,
)
from kertransfer.methods.terms import (
    L2SP,
    RegularizedModel,
    Term,
    parameters,
    regularizer_terms,
    remove_regularizers,
    snapshot,
    with_regularizers,
)

__all__ = ["AdaptResult", "EWC", "EpisodeLogits", "GradientReversal", "L2SP", "LwF", "METHODS",
           "MetaTrainResult", "PretextModel", "PretrainResult", "RegularizedModel", "TASKS",
           "Term", "adabn", "adapt", "add_head", "coral_loss", "dann_lambda", "fewshot",
           "fisher_diagonal", "fit_two_heads", "learn_without_forgetting", "meta_train",
           "nt_xent", "parameters", "pretrain", "regularizer_terms", "remove_regularizers",
           "rotate_batch", "simclr_augmentation", "snapshot", "with_regularizers"]
