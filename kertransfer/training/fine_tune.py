"""`fine_tune`: the two-phase recipe (linear probe, then fine-tune) in one call.

Phase 1 fits the head on the frozen backbone. By default (``head_fit="auto"``,
for a head of one dense layer) it is a linear probe solved to convergence:
L2-regularised logistic regression on the backbone's pooled features, its
strength chosen by cross-validation (`kertransfer.training.probe`), written
into the model's classification layer. Otherwise (``head_fit="epochs"``, or a
head with hidden layers or several tasks) the head trains for
``freeze_epochs`` epochs of gradient steps. Phase 2 unfreezes the backbone
(all of it, or the top ``unfreeze_top`` blocks) and trains at
``learning_rate * learning_rate_multiplier`` (optionally with discriminative rates per
block), through
`StagedUnfreezing`, so a trained head's optimizer state carries over and
newly unfrozen variables start with a fresh optimizer's first steps. With
validation data, early stopping watches phase 2 and restores the best
weights. This is LP-FT (Kumar et al. 2022), and with ``head_fit="epochs"``
fastai's ``fine_tune``.

Phase 2 lasts ``epochs`` epochs; by default (None) 10 epochs and at least
``MIN_STEPS`` optimizer steps, so that a small dataset (10 labels per class is
4 steps an epoch) still fine-tunes for a few hundred steps.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import keras

from kertransfer import _log
from kertransfer._graphs import releases_graphs
from kertransfer.data.training_data import as_training_data, as_validation_data, unaugmented_train
from kertransfer.errors import InvalidArgumentError, format_message
from kertransfer.freezing.apply import apply_policy
from kertransfer.training.batchnorm import batchnorm_layers, recalibrate_batchnorm
from kertransfer.training.feature_cache import train_head_on_features
from kertransfer.training.probe import probe_head, probe_unavailable
from kertransfer.training.recipe import adopt_head_state, phase_optimizer
from kertransfer.training.results import FineTuneResult
from kertransfer.training.run import build_training_state, compile_for_transfer, evaluate_splits
from kertransfer.training.unfreezing import StagedUnfreezing
from kertransfer.training.validation import RecalibratedValidation
from kertransfer.validation import check_choice, check_int, check_number

HEAD_FITS = ("auto", "probe", "epochs")
#: Phase 2's least number of optimizer steps when ``epochs`` is None.
MIN_STEPS = 300
DEFAULT_EPOCHS = 10
#: ``fine_tune``'s ``head_temperature`` by default: phase 2 starts from the probe's weights / 4
#: (chosen on development seeds; on ImageNet weights 0.9 to 1.6 points above the probe as
#: fitted, docs/benchmarks.md).
HEAD_TEMPERATURE = 4.0


def _can_cache(train, wanted: bool, freeze_epochs: int) -> tuple[bool, str]:
    if not wanted or not freeze_epochs:
        return False, "not asked for"
    if not hasattr(train, "as_numpy"):
        return False, "it needs a kertransfer DataBundle (a plain dataset may augment inside)"
    if getattr(train, "augmentation", None) is not None:
        return False, ("augmentation is on, and cached features would freeze one random "
                       "augmentation for every epoch")
    return True, ""


def phase2_epochs(epochs, train_ds) -> int:
    """Phase 2's epochs: ``epochs`` checked, or for None ``DEFAULT_EPOCHS`` and at least
    ``MIN_STEPS`` steps of ``train_ds`` when its length is known."""
    if epochs is not None:
        return check_int(epochs, "epochs", minimum=1)
    try:
        steps = len(train_ds)
    except TypeError:  # unknown length: epochs as given
        return DEFAULT_EPOCHS
    return max(DEFAULT_EPOCHS, -(-MIN_STEPS // max(int(steps), 1)))


def use_probe_head(head_fit: str, model, freeze_epochs: int,
                   loss_weights=None) -> tuple[bool, str]:
    """Whether phase 1 fits the head as a probe, and if ``"auto"`` falls back, why not."""
    check_choice(head_fit, "head_fit", HEAD_FITS)
    if head_fit == "epochs" or not freeze_epochs:
        return False, ""
    why = "the model has several tasks" if loss_weights else probe_unavailable(model)
    if why and head_fit == "probe":
        raise InvalidArgumentError(format_message(
            f"head_fit='probe' needs a head of one dense layer: {why}.",
            fix="Use head_fit='epochs' (or 'auto', which falls back to it).",
            received={"head_fit": head_fit}))
    return not why, why


def _phase_one_kind(use_probe: bool, no_probe: str, train, cache_features: bool,
                    freeze_epochs: int, verbose) -> tuple[str, int]:
    """How phase 1 fits the head (see `_phase_one`) and its epochs (0 for the probe),
    saying why when the head is not a probe or its epochs not on cached features."""
    if use_probe:
        return "probe", 0
    if no_probe and verbose:
        _log.print_msg(f"Head trained by epochs, not as a linear probe: {no_probe}")
    use_cache, why = _can_cache(train, cache_features, freeze_epochs)
    if cache_features and freeze_epochs and not use_cache and verbose:
        _log.print_msg(f"Feature cache skipped: {why}")
    return ("cache" if use_cache else "fit"), freeze_epochs


def _phase_one(model, train, val, how: str, phase2: tuple, freeze_epochs: int,
               learning_rate: float, opt, loss_weights, seed, verbose,
               head_temperature: float):
    """Fit the head as ``how`` says (``"probe"``, ``"cache"``: epochs on cached
    features, ``"fit"``: epochs inside the run's own ``fit``) and compile the model
    for the run; returns ``(phase-1 history, StagedUnfreezing schedule, the run's
    first epoch, the probe or None)``."""
    if how == "probe":
        apply_policy(model, "all", model.bn_mode)
        probe = probe_head(model, train if hasattr(train, "as_numpy") else train.train,
                           seed=seed, temperature=head_temperature, verbose=verbose)
        compile_for_transfer(model, learning_rate, opt, loss_weights=loss_weights)
        return {}, [(0, *phase2)], 0, probe
    if how == "cache":
        apply_policy(model, "all", model.bn_mode)
        phase1, head = train_head_on_features(
            model, train, epochs=freeze_epochs, learning_rate=learning_rate,
            optimizer=phase_optimizer(opt, learning_rate, model=model, copy=True),
            batch_size=getattr(train, "batch_size", 32), validation_data=val, verbose=verbose,
            loss_weights=loss_weights, seed=seed, return_head=True)
        compile_for_transfer(model, learning_rate, opt, loss_weights=loss_weights)
        adopt_head_state(model, head)  # the head's moments and step counts go on
        return phase1, [(freeze_epochs, *phase2)], freeze_epochs, None
    compile_for_transfer(model, learning_rate, opt, loss_weights=loss_weights)
    if freeze_epochs:
        return {}, [(0, "head"), (freeze_epochs, *phase2)], 0, None
    return {}, [(0, *phase2)], 0, None


@releases_graphs
def fine_tune(model, data: Any, validation_data: Any = None, *, epochs: int | None = None,
              freeze_epochs: int = 1, head_fit: str = "auto",
              head_temperature: float = HEAD_TEMPERATURE,
              learning_rate: float = 1e-3, learning_rate_multiplier: float = 0.1,
              unfreeze_top: int | str = "all",
              decay: float | None = None, optimizer: Any = "adam", patience: int | None = 3,
              recalibrate_bn: bool | str = "auto", cache_features: bool = True,
              callbacks=None, loss_weights: dict[str, float] | None = None,
              seed: int | None = None, verbose: int | str = "auto") -> FineTuneResult:
    """Train the head on the frozen backbone, then fine-tune, in one ``fit()``.

    Args:
        model: A model from ``build_transfer_model`` (its freeze state is replaced).
        data: A ``kertransfer.data.DataBundle``, a ``kertransfer.data.ArrayData``,
            ``(x, y)`` arrays, or a dataset of ``(inputs, labels)`` batches.
        validation_data: Validation data (default: the bundle's ``val`` split).
        epochs: Epochs of phase 2 (fine-tuning). None: 10, or more to make
            at least ``MIN_STEPS`` (300) steps when the length of an epoch is
            known. With a head trained by epochs the run lasts ``freeze_epochs
            + epochs`` epochs, as fastai's ``fine_tune``.
        freeze_epochs: Epochs of phase 1 when the head trains by gradient steps;
            0 skips phase 1 (one-stage fine-tuning from a random head).
        head_fit: How phase 1 fits the head. ``"probe"``: logistic regression on
            the frozen backbone's pooled features (un-augmented images), ``C``
            by 5-fold cross-validation, written into the classification layer
            (`kertransfer.training.probe.probe_head`); the backbone runs once.
            ``"epochs"``: ``freeze_epochs`` epochs of gradient steps at
            ``learning_rate`` (on cached features when ``cache_features`` allows).
            ``"auto"``: the probe when the head is one dense layer over pooled
            features of one task, else epochs.
        head_temperature: With a probe head, phase 2 starts from the probe's
            weights divided by this: the same decisions with softer
            probabilities, so the first fine-tuning steps get larger gradients
            (4 by default, ``HEAD_TEMPERATURE``; 1: the probe as fitted).
        learning_rate: Learning rate of phase 1 (head trained by epochs); phase 2
            runs at ``learning_rate * learning_rate_multiplier`` either way.
        learning_rate_multiplier: Phase 2 runs at ``learning_rate *
            learning_rate_multiplier`` (0.1: 1e-4 by default).
        unfreeze_top: ``"all"`` or the number of blocks to unfreeze in phase 2,
            counted from the top (``unfreeze_top=2``: the last two blocks train).
        decay: If given, discriminative rates in phase 2: each block down trains
            ``decay`` times slower than the one above.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` or a Keras optimizer
            instance (its settings are kept, its rate set to ``learning_rate``; it
            becomes ``model.optimizer`` unless ``decay`` wraps it).
        patience: Early-stopping patience (epochs of phase 2 without a better
            ``val_loss``; best weights restored). None turns it off.
        recalibrate_bn: Recompute the statistics of the BatchNorm layers that
            trained, at the end, from un-augmented training data with dropout
            off (``"auto"``: when any BatchNorm layer trained; True; False).
            Frozen blocks keep their statistics. While BatchNorm trains, each
            epoch's validation also runs after such a recalibration
            (`kertransfer.training.validation.RecalibratedValidation`), unless
            this is False.
        cache_features: Run phase 1 on cached backbone features (the backbone
            runs once instead of every epoch) when ``train`` is a DataBundle
            without augmentation; otherwise phase 1 trains through the
            backbone and a message says why.
        callbacks: Extra Keras callbacks (on phase 1 too, unless it runs on cached
            features, where the model's fit starts at phase 2).
        loss_weights: ``{task: weight}`` of a multi-task model's losses (its
            data from `kertransfer.data.DataBundle.with_tasks`).
        seed: Seeds the probe's cross-validation folds, or the order of cached
            features in phase 1 (None: unseeded). No global random state is
            reset.
        verbose: Keras verbosity: 0, 1, 2 or ``"auto"`` (progress bars on a
            terminal, a line per epoch elsewhere).

    Returns:
        A `kertransfer.training.FineTuneResult`: ``history``, ``metrics``
        (the validation split and the data's test split, when they exist,
        scored with the weights the model ends with), ``stages`` (the epoch,
        0-based, where each phase began, for plots), ``best_epoch`` (the epoch
        early stopping restored), ``probe`` (the probe's ``C`` and
        cross-validated accuracy when phase 1 was one), ``cached_features``,
        ``stopped_epoch`` and ``seconds``; ``str(result)`` says which epoch
        the scores come from.
    """
    start = time.perf_counter()
    freeze_epochs = check_int(freeze_epochs, "freeze_epochs", minimum=0)
    learning_rate_multiplier = check_number(learning_rate_multiplier,
                                            "learning_rate_multiplier", minimum=0,
                                            exclusive_minimum=True)
    if not isinstance(unfreeze_top, str):  # "all" and "head" are checked with the schedule
        unfreeze_top = check_int(unfreeze_top, "unfreeze_top", minimum=0,
                                 fix='Blocks to train from the top in phase 2, or "all".')
    patience = check_int(patience, "patience", minimum=0, allow_none=True)
    head_temperature = check_number(head_temperature, "head_temperature", minimum=0,
                                    exclusive_minimum=True)
    use_probe, no_probe = use_probe_head(head_fit, model, freeze_epochs, loss_weights)
    train = as_training_data(data, "data")
    train_ds = train.train
    epochs = phase2_epochs(epochs, train_ds)
    val = (train.val if validation_data is None
           else as_validation_data(validation_data, "validation_data"))
    opt = phase_optimizer(optimizer, learning_rate, decay=decay)
    how, freeze_epochs = _phase_one_kind(use_probe, no_probe, train, cache_features,
                                         freeze_epochs, verbose)
    use_cache = how == "cache"
    cbs = list(callbacks or [])
    early = None
    if val is not None and patience is not None:
        early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                              restore_best_weights=True,
                                              start_from_epoch=freeze_epochs)
    phase2 = (unfreeze_top, learning_rate_multiplier)
    phase1, schedule, initial_epoch, probe = _phase_one(
        model, train, val, how, phase2, freeze_epochs, learning_rate, opt, loss_weights, seed,
        verbose, head_temperature)
    stages = StagedUnfreezing(schedule, verbose=1 if verbose else 0)
    cbs.insert(0, stages)
    clean = unaugmented_train(train)
    if val is not None and recalibrate_bn is not False:
        cbs.insert(1, RecalibratedValidation(clean))
    if early is not None:
        cbs.append(early)
    build_training_state(model, train_ds)
    hist = model.fit(train_ds, validation_data=val, epochs=freeze_epochs + epochs,
                     initial_epoch=initial_epoch, shuffle=False, callbacks=cbs,
                     verbose=_log.fit_verbose(verbose))
    history = {k: list(phase1.get(k, [])) + [float(v) for v in vals]
               for k, vals in hist.history.items()}
    trained_bn = batchnorm_layers(model, "trainable")
    if recalibrate_bn is True or (recalibrate_bn == "auto" and trained_bn):
        recalibrate_batchnorm(model, clean, layers="trainable", verbose=int(bool(verbose)))
    label = f"fine-tune ({unfreeze_top} blocks, lr x{learning_rate_multiplier:g})"
    marks = [(0, "head (backbone frozen)")] if freeze_epochs else []
    if probe is not None:
        marks = [(0, f"head: linear probe (C={probe.C:g})")]
    marks.append((freeze_epochs, label))
    restored = early is not None and early.best_weights is not None
    metrics = evaluate_splits(model, SimpleNamespace(val=val, test=getattr(train, "test", None)))
    return FineTuneResult(
        model=model, history=history, metrics=metrics, stages=marks,
        seconds=time.perf_counter() - start, probe=probe, cached_features=use_cache,
        stopped_epoch=int(early.stopped_epoch) if early is not None else 0,
        best_epoch=int(early.best_epoch) + 1 if restored else None)
