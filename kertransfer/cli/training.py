"""The training commands of ``kertransfer``: train, tune, adapt and pretrain."""

from __future__ import annotations

from kertransfer.cli.commands import _load_data


def _schedule(name: str, lr: float, steps: int):
    from kertransfer.training import OneCycle, SlantedTriangular, WarmupCosine

    if name == "cosine":
        return WarmupCosine(lr, steps, warmup_steps=min(steps // 10, steps - 1))
    if name == "onecycle":
        return OneCycle(lr, steps)
    if name == "slanted":
        return SlantedTriangular(lr, steps)
    return lr


def _run_config(args, backbone: str, size, data, lr: float, terms: list[str], found) -> dict:
    """The settings a train run records in its folder (``found``: the lr_find result)."""
    from kertransfer.training.fine_tune import HEAD_TEMPERATURE

    config = {
        "data": args.data, "image_size": list(size), "batch_size": args.batch_size,
        "backbone": backbone, "weights": args.weights, "freeze": args.freeze, "bn": args.bn,
        "dropout": args.dropout, "head_units": args.head_units, "optimizer": args.optimizer,
        "learning_rate": lr, "schedule": args.schedule, "freeze_epochs": args.freeze_epochs,
        "head_fit": args.head_fit, "head_temperature": HEAD_TEMPERATURE
        if args.head_temperature is None else args.head_temperature,
        "unfreeze_top": args.unfreeze_top,
        "learning_rate_multiplier": args.learning_rate_multiplier, "seed": args.seed,
        "validation_split": args.validation_split, "test_split": args.test_split,
        "samples_per_class": args.samples_per_class,
        "class_names": data.class_names, "counts": data.counts,
        "regularizers": terms,
    }
    if found is not None:  # the curve, for `kertransfer report`
        config["lr_find"] = {"lrs": found.lrs, "smoothed": found.smoothed,
                             "suggestion": found.suggestion}
    return config


def run_train(args) -> int:
    from kertransfer.backbones import get_backbone_spec
    from kertransfer.errors import InvalidArgumentError, format_message
    from kertransfer.freezing import trainable_summary
    from kertransfer.models import build_transfer_model
    from kertransfer.training import fine_tune, lr_find, save_run, train
    from kertransfer.training.fine_tune import DEFAULT_EPOCHS, phase2_epochs, use_probe_head

    if args.freeze_epochs and args.schedule != "constant":
        raise InvalidArgumentError(
            format_message("--schedule needs the one-phase run of --freeze-epochs 0 (the two "
                           "phases set their own rates).", fix="Add --freeze-epochs 0.",
                           received={"schedule": args.schedule,
                                     "freeze_epochs": args.freeze_epochs})
        )
    spec = get_backbone_spec(args.backbone)
    size = args.image_size or (spec.default_size, spec.default_size)
    steps_total = 4 if args.lr_find else 3
    print(f"[1/{steps_total}] Loading data {args.data!r} at {size[0]}x{size[1]}")
    data = _load_data(args, size)
    print(data.summary())
    print(f"[2/{steps_total}] Building {spec.name} (weights={args.weights}, freeze={args.freeze}, "
          f"bn={args.bn})")
    model = build_transfer_model(
        spec.name, data.num_classes, input_shape=(*size, 3), weights=args.weights,
        freeze=args.freeze, bn=args.bn, dropout=args.dropout, head_units=tuple(args.head_units),
    )
    trainable_summary(model)
    lr, found = args.learning_rate, None
    if args.lr_find:
        print(f"[3/{steps_total}] Learning-rate range test")
        found = lr_find(model, data, plot=None, verbose=1)
        lr = found.suggestion
    terms = _regularizers(args, model, size)
    config = _run_config(args, spec.name, size, data, lr, terms, found)
    one_phase = DEFAULT_EPOCHS if args.epochs is None else args.epochs
    epochs = phase2_epochs(args.epochs, data.train) if args.freeze_epochs else one_phase
    config["epochs"] = epochs
    if args.freeze_epochs:
        probe, _ = use_probe_head(args.head_fit, model, args.freeze_epochs)
        head = ("Fitting the head as a linear probe" if probe
                else f"Training the head {args.freeze_epochs} epochs")
        print(f"[{steps_total}/{steps_total}] {head}, then fine-tuning {epochs} epochs")
        result = fine_tune(model, data, epochs=epochs, freeze_epochs=args.freeze_epochs,
                           head_fit=args.head_fit, head_temperature=config["head_temperature"],
                           learning_rate=lr,
                           learning_rate_multiplier=args.learning_rate_multiplier,
                           unfreeze_top=args.unfreeze_top,
                           optimizer=args.optimizer, seed=args.seed, verbose=args.verbose)
        config.update(metrics=result.metrics, stages=result.stages,
                      scored_epoch=result.scored_epoch)
        result.out = save_run(model, args.out, config, result.history, stages=result.stages)
    else:
        print(f"[{steps_total}/{steps_total}] Training {epochs} epochs")
        steps = epochs * max(int(data.train.cardinality()), 1)
        result = train(model, data, epochs=epochs,
                       learning_rate=_schedule(args.schedule, lr, steps),
                       optimizer=args.optimizer, out=args.out, config=config,
                       verbose=args.verbose)
    print(result.summary())
    print(f"Saved the run to {result.out}")
    return 0


def _regularizers(args, model, size) -> list[str]:
    """Add the --l2sp / --ewc terms to ``model``; return their descriptions."""
    from kertransfer.errors import InvalidArgumentError, format_message
    from kertransfer.methods import EWC, L2SP, with_regularizers

    terms, shown = [], []
    if args.l2sp is not None:
        if len(args.l2sp) > 2:
            raise InvalidArgumentError(format_message("--l2sp takes ALPHA and at most BETA.",
                                                      received={"l2sp": args.l2sp}))
        alpha, beta = args.l2sp[0], args.l2sp[-1]
        terms.append(L2SP(alpha=alpha, beta=beta))
        shown.append(f"l2sp alpha={alpha} beta={beta}")
    if args.ewc is not None:
        if not args.ewc_data:
            raise InvalidArgumentError(
                format_message("--ewc needs the source data to compute the Fisher.",
                               fix="Pass --ewc-data (digits, a folder, ...).",
                               received={"ewc": args.ewc, "ewc_data": None}))
        from kertransfer.data import load

        source = load(args.ewc_data, image_size=size, batch_size=args.batch_size,
                      validation_split=0.0, seed=args.seed, verbose=0)
        if source.num_classes != int(model.output_shape[-1]):
            raise InvalidArgumentError(
                format_message("--ewc computes the Fisher with the model's own head, so the "
                               "source data must have as many classes as the model outputs.",
                               received={"ewc_data": args.ewc_data,
                                         "classes": source.num_classes}))
        terms.append(EWC(args.ewc, data=source, seed=args.seed))
        shown.append(f"ewc lambda={args.ewc} on {args.ewc_data}")
    if terms:
        with_regularizers(model, terms)
        print(f"Regularizers: {'; '.join(shown)}")
    return shown


def run_adapt(args) -> int:
    import dataclasses

    import keras

    from kertransfer.data import load
    from kertransfer.methods import adapt
    from kertransfer.serving.sources import load_keras_source
    from kertransfer.training import evaluate_splits, save_run

    model, info = load_keras_source(args.model)
    size = (int(model.input_shape[1]), int(model.input_shape[2]))
    print(f"[1/3] Loading source {args.source!r} and target {args.target!r} at "
          f"{size[0]}x{size[1]}")
    source = load(args.source, image_size=size, batch_size=args.batch_size,
                  validation_split=0.0, seed=args.seed, verbose=0)
    target = load(args.target, image_size=size, batch_size=args.batch_size,
                  validation_split=0.0, test_split=args.test_split, seed=args.seed, verbose=0)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    scored = dataclasses.replace(target, val=None)
    before = evaluate_splits(model, scored, splits=("test",)).get("test_accuracy")
    if before is not None:
        print(f"[2/3] Target test accuracy before: {before:.4f}; adapting with "
              f"{args.method} ({args.epochs} epochs)")
    adapted = adapt(model, source=source, target=target, method=args.method,
                    epochs=args.epochs, learning_rate=args.learning_rate, weight=args.weight,
                    seed=args.seed, verbose=args.verbose)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    metrics = evaluate_splits(model, scored, splits=("test",))
    if "test_accuracy" in metrics:
        print(f"[3/3] Target test accuracy after: {metrics['test_accuracy']:.4f}")
    config = {"adapted_from": str(args.model), "source": args.source, "target": args.target,
              "method": args.method, "epochs": args.epochs, "learning_rate": args.learning_rate,
              "weight": args.weight, "seed": args.seed, "metrics": metrics,
              "target_test_accuracy_before": before,
              "class_names": info.get("class_names", source.class_names)}
    path = save_run(model, args.out, config, adapted.history)
    keras.backend.clear_session()
    print(f"Saved the run to {path}")
    return 0


def run_pretrain(args) -> int:
    import keras

    from kertransfer.methods import pretrain

    print(f"Pretraining {args.backbone} on {args.data!r} ({args.task}, {args.epochs} epochs, "
          f"{args.image_size}x{args.image_size})")
    result = pretrain(args.backbone, args.data, task=args.task,
                      input_shape=(args.image_size, args.image_size, 3), weights=args.weights,
                      epochs=args.epochs, batch_size=args.batch_size,
                      learning_rate=args.learning_rate,
                      temperature=args.temperature, projection_dim=args.projection_dim,
                      out=args.out, seed=args.seed, verbose=args.verbose)
    keras.backend.clear_session()
    if not args.verbose:
        print(f"Saved the backbone to {result.path}")
    print(f"Use it with: kertransfer train --backbone {args.backbone} --weights {result.path} ...")
    return 0


def run_tune(args) -> int:
    from kertransfer.backbones import get_backbone_spec
    from kertransfer.tuning import TransferHyperModel, tune

    specs = [get_backbone_spec(b) for b in args.backbone]
    size = args.image_size or (specs[0].default_size, specs[0].default_size)
    print(f"[1/2] Loading data {args.data!r} at {size[0]}x{size[1]}")
    data = _load_data(args, size)
    print(data.summary())
    hypermodel = TransferHyperModel(
        [s.name for s in specs], data.num_classes, input_shape=(*size, 3), weights=args.weights,
        space=dict(args.space), optimizer=args.optimizer, epochs=args.epochs,
        batch_size=args.batch_size, mixed_precision=args.mixed_precision)
    searched = ", ".join(hypermodel.searched()) or "nothing (every knob fixed)"
    print(f"[2/2] {args.tuner} search in {args.dir}: searching {searched}")
    tuner = tune(hypermodel, data, tuner=args.tuner, max_trials=args.max_trials,
                 epochs=args.epochs, directory=args.dir, objective=args.objective,
                 seed=args.seed, overwrite=args.overwrite, distributed=args.distributed,
                 oracle_address=args.oracle_address, tuner_id=args.tuner_id,
                 trials_per_process=args.trials_per_process, verbose=args.verbose)
    if args.verbose == 0 and args.distributed != "worker":  # the table is the output
        from kertransfer.tuning import format_results

        print(f"Search results ({len(tuner.results)} trials, objective {args.objective}):")
        print(format_results(tuner.results, args.objective,
                             tuner.tuner.oracle.objective.direction))
    return 0
