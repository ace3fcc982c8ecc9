"""The ``kertransfer`` commands: each turns parsed arguments into library calls."""

from __future__ import annotations

import json


def run_backbones(args) -> int:
    from kertransfer.backbones import get_backbone_spec, list_backbones

    names = list_backbones(args.filter, args.family)
    rows = [("name", "family", "default", "min", "preprocessing", "blocks")]
    for name in names:
        s = get_backbone_spec(name)
        rows.append((name, s.family, str(s.default_size), str(s.min_size), s.preprocessing,
                     str(len(s.blocks))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if args.blocks:
        print()
        for name in names:
            print(f"{name}: {', '.join(get_backbone_spec(name).block_names)}")
    print(f"\n{len(names)} backbones")
    return 0


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def run_weights(args) -> int:
    import sys

    from kertransfer.errors import KertransferError
    from kertransfer.models.imagenet import install_weights, installable, installed_weights

    if args.action is None:
        args._parser.print_help()
        return 2
    if args.action == "install":
        status = 0
        for name in args.names:
            try:
                install_weights(name, cache_dir=args.cache_dir, force=args.force,
                                verbose=args.verbose)
            except KertransferError as exc:
                print(f"kertransfer weights install: error: {exc}", file=sys.stderr)
                status = 2
        return status
    rows = installed_weights(args.cache_dir)
    if args.json:
        print(json.dumps({"files": rows, "installable": installable()}, indent=2))
        return 0
    from kertransfer.models.imagenet.install import cache_folder

    folder = cache_folder(args.cache_dir)
    if rows:
        _table([("backbone", "file", "size", "status", "source")] + [
            (r["backbone"] or "-", r["file"],
             "-" if r["size"] is None else f"{r['size'] / 1e6:.1f} MB", r["status"],
             r["source"] or "-") for r in rows])
        print(f"\n{len(rows)} files in {folder}")
    else:
        print(f"No weights in {folder}")
    print(f"Installable offline (kertransfer weights install NAME): {', '.join(installable())}")
    return 0


def run_info(args) -> int:
    from kertransfer.freezing import trainable_summary
    from kertransfer.training.run_folder import find_model, load_model

    path, _ = find_model(args.model)
    model = load_model(path)
    summary = trainable_summary(model, print_fn=None)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(f"{path}: {model.name}, input {tuple(model.input_shape[1:])}, "
              f"{model.output_shape[-1]} outputs ({getattr(model, 'activation', '?')})")
        print(summary)
    return 0


def _schedule(name: str, lr: float, steps: int):
    from kertransfer.training import OneCycle, SlantedTriangular, WarmupCosine

    if name == "cosine":
        return WarmupCosine(lr, steps, warmup_steps=min(steps // 10, steps - 1))
    if name == "onecycle":
        return OneCycle(lr, steps)
    if name == "slanted":
        return SlantedTriangular(lr, steps)
    return lr


def _load_data(args, size):
    """The data bundle the --data flags describe, at ``size``."""
    from kertransfer.data import load

    return load(args.data, image_size=size, batch_size=args.batch_size,
                validation_split=args.validation_split, test_split=args.test_split,
                samples_per_class=args.samples_per_class, augment=args.augment or None,
                seed=args.seed)


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
    lr = args.learning_rate
    if args.lr_find:
        print(f"[3/{steps_total}] Learning-rate range test")
        found = lr_find(model, data, plot=None, verbose=1)
        lr = found.suggestion
    terms = _regularizers(args, model, size)
    config = {
        "data": args.data, "image_size": list(size), "batch_size": args.batch_size,
        "backbone": spec.name, "weights": args.weights, "freeze": args.freeze, "bn": args.bn,
        "dropout": args.dropout, "head_units": args.head_units, "optimizer": args.optimizer,
        "learning_rate": lr, "schedule": args.schedule, "freeze_epochs": args.freeze_epochs,
        "head_fit": args.head_fit,
        "unfreeze_top": args.unfreeze_top,
        "learning_rate_multiplier": args.learning_rate_multiplier, "seed": args.seed,
        "validation_split": args.validation_split, "test_split": args.test_split,
        "samples_per_class": args.samples_per_class,
        "class_names": data.class_names, "counts": data.counts,
        "regularizers": terms,
    }
    if args.lr_find:  # the curve, for `kertransfer report`
        config["lr_find"] = {"lrs": found.lrs, "smoothed": found.smoothed,
                             "suggestion": found.suggestion}
    one_phase = DEFAULT_EPOCHS if args.epochs is None else args.epochs
    epochs = phase2_epochs(args.epochs, data.train) if args.freeze_epochs else one_phase
    config["epochs"] = epochs
    if args.freeze_epochs:
        probe, _ = use_probe_head(args.head_fit, model, args.freeze_epochs)
        head = ("Fitting the head as a linear probe" if probe
                else f"Training the head {args.freeze_epochs} epochs")
        print(f"[{steps_total}/{steps_total}] {head}, then fine-tuning {epochs} epochs")
        result = fine_tune(model, data, epochs=epochs, freeze_epochs=args.freeze_epochs,
                           head_fit=args.head_fit,
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


def _candidate(spec: str):
    """A --candidate SPEC as rank_backbones takes it."""
    import os

    from kertransfer.training.run_folder import MODEL_FILE

    if spec == "pixels":
        return spec
    if os.path.isdir(spec) and os.path.isfile(os.path.join(spec, MODEL_FILE)):
        return os.path.join(spec, MODEL_FILE)
    if spec.endswith(".keras") and "=" not in spec:
        return spec
    if "=" in spec:
        name, weights = spec.split("=", 1)
        return (name, None if weights.lower() in ("none", "random") else weights)
    return spec


def run_rank(args) -> int:
    import keras

    from kertransfer.backbones import get_backbone_spec
    from kertransfer.insight.ranking import rank_backbones

    names = [c if isinstance(c, str) else c[0] for c in map(_candidate, args.candidate)]
    registered = [n for n in names if n != "pixels" and not n.endswith(".keras")]
    size = args.image_size or (
        (get_backbone_spec(registered[0]).default_size,) * 2 if registered else (224, 224))
    data = _load_data(args, size)
    candidates = {spec: _candidate(spec) for spec in args.candidate}
    ranking = rank_backbones(candidates, data, metrics=args.metrics,
                             input_shape=(*size, 3), weights=args.weights,
                             max_examples=args.max_examples, seed=args.seed)
    keras.backend.clear_session()
    if args.out:
        print(f"Wrote {ranking.to_csv(args.out)}")
    return 0


def run_explain(args) -> int:
    import keras
    import numpy as np

    from kertransfer.insight.gradcam import grad_cam
    from kertransfer.serving.predict import decode_image_file, image_files
    from kertransfer.serving.sources import load_keras_source

    model, info = load_keras_source(args.model)
    files = image_files(args.images)
    height, width = model.input_shape[1:3]
    images = np.stack([np.asarray(keras.ops.image.resize(
        np.asarray(decode_image_file(f, f.read_bytes()), "float32"), (height, width)))
        for f in files])
    names = info.get("class_names")
    if isinstance(names, dict):
        names = names.get(args.head)
    result = grad_cam(model, images, class_index=args.class_index, layer=args.layer,
                      head=args.head, out=args.out, names=[f.stem for f in files],
                      class_names=names)
    for f, k, p, path in zip(files, result.class_index, result.probability, result.paths):
        label = names[k] if names is not None and k < len(names) else str(k)
        print(f"{f}: {label} (p={p:.3f}) -> {path}")
    print(f"Grad-CAM on layer {result.layer!r}; {len(result.paths)} overlays in {args.out}")
    keras.backend.clear_session()
    return 0


def run_report(args) -> int:
    import os

    from kertransfer.insight.report import run_report
    from kertransfer.training.run_folder import read_config

    # Not a folder: run_report says what it takes.
    config = read_config(args.run) if os.path.isdir(args.run) else {}
    # The run's own split, so the evaluated images are ones it did not train on.
    for key, default in (("validation_split", 0.2), ("test_split", 0.0), ("seed", 0)):
        if getattr(args, key) is None:
            setattr(args, key, config.get(key, default))
    split = args.split or ("test" if args.test_split else "val")
    data = None
    if args.data:
        shape = config.get("image_size") or (config.get("hypermodel") or {}).get("input_shape")
        size = args.image_size or (tuple(shape[:2]) if shape else (224, 224))
        data = _load_data(args, size)
    path = run_report(args.run, data, split=split, out=args.out, head=args.head,
                      threshold=args.threshold)
    print(f"Wrote {path}" + (f" (evaluated on the {split} split of {args.data})"
                             if data is not None else ""))
    return 0


def run_lint(args) -> int:
    from kertransfer.insight.linting import lint
    from kertransfer.serving.sources import load_keras_source

    model, _ = load_keras_source(args.model)
    batch, examples = None, args.examples
    if args.data:
        size = args.image_size or tuple(model.input_shape[1:3])
        data = _load_data(args, size)
        batch = next(iter(data.train))[0].numpy()
        examples = examples or data.counts["train"]
    report = lint(model, batch, num_examples=examples, expect_pretrained=args.pretrained)
    print(report)
    return 0 if report.ok else 1


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


def run_export(args) -> int:
    from kertransfer.serving import export

    path = export(args.model, args.out, format=args.format, class_names=args.class_names,
                  threshold=args.threshold, version=args.version, overwrite=args.overwrite,
                  check=args.check, tolerance=args.tolerance, verbose=0 if args.quiet else 1)
    if args.quiet:
        print(path)
    return 0


def run_predict(args) -> int:
    from kertransfer.serving import format_predictions, predict

    rows = predict(args.model, args.images, top_k=args.top_k, batch_size=args.batch_size,
                   threshold=args.threshold)
    print(json.dumps(rows, indent=2) if args.json else format_predictions(rows))
    return 0


def run_demo(args) -> int:
    from kertransfer.cli.demo import run_demo as demo

    demo(out=args.out, seeds=args.seeds, labels_per_class=args.labels_per_class,
         backbone=args.backbone, quick=args.quick, task=args.task, verbose=args.verbose)
    return 0
