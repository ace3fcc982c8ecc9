"""The ``kertransfer`` commands: each turns parsed arguments into library calls."""

from __future__ import annotations

import json
import pathlib


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


def _model_path(path: str) -> pathlib.Path:
    from kertransfer.errors import InvalidArgumentError, format_message

    p = pathlib.Path(path)
    if p.is_dir():
        p = p / "model.keras"
    if not p.is_file():
        raise InvalidArgumentError(
            format_message("No model file there.", expected="a .keras file or a run folder "
                           "with model.keras", received={"model": path})
        )
    return p


def run_info(args) -> int:
    import keras

    from kertransfer.freezing import trainable_summary

    path = _model_path(args.model)
    model = keras.saving.load_model(path, compile=False)
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
    from kertransfer.training.run import evaluate_splits

    if args.freeze_epochs and args.schedule != "constant":
        raise InvalidArgumentError(
            format_message("--schedule cannot be combined with --freeze-epochs (the stages set "
                           "the rates).", received={"schedule": args.schedule,
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
    lr = args.lr
    if args.lr_find:
        print(f"[3/{steps_total}] Learning-rate range test")
        lr = lr_find(model, data, plot=None, verbose=1).suggestion
    config = {
        "data": args.data, "image_size": list(size), "batch_size": args.batch_size,
        "backbone": spec.name, "weights": args.weights, "freeze": args.freeze, "bn": args.bn,
        "dropout": args.dropout, "head_units": args.head_units, "optimizer": args.optimizer,
        "learning_rate": lr, "schedule": args.schedule, "freeze_epochs": args.freeze_epochs,
        "unfreeze": args.unfreeze, "lr_mult": args.lr_mult, "seed": args.seed,
        "class_names": data.class_names, "counts": data.counts,
    }
    if args.freeze_epochs:
        print(f"[{steps_total}/{steps_total}] Training the head {args.freeze_epochs} epochs, "
              f"then fine-tuning {args.epochs} epochs")
        out = fine_tune(model, data, epochs=args.epochs, freeze_epochs=args.freeze_epochs,
                        base_lr=lr, lr_mult=args.lr_mult, unfreeze=args.unfreeze,
                        optimizer=args.optimizer, verbose=args.verbose)
        metrics = evaluate_splits(model, data)
        config.update(metrics=metrics, stages=out["stages"])
        path = save_run(model, args.out, config, out["history"], stages=out["stages"])
    else:
        print(f"[{steps_total}/{steps_total}] Training {args.epochs} epochs")
        steps = args.epochs * max(int(data.train.cardinality()), 1)
        result = train(model, data, epochs=args.epochs,
                       learning_rate=_schedule(args.schedule, lr, steps),
                       optimizer=args.optimizer, out=args.out, config=config,
                       verbose=args.verbose)
        metrics, path = result.metrics, result.out
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}")
    print(f"Saved the run to {path}")
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
                             tuner.oracle.objective.direction))
    return 0


def run_export(args) -> int:
    from kertransfer.export import export

    path = export(args.model, args.out, format=args.format, class_names=args.class_names,
                  version=args.version, overwrite=args.overwrite, check=args.check,
                  tolerance=args.tolerance, verbose=0 if args.quiet else 1)
    if args.quiet:
        print(path)
    return 0


def run_predict(args) -> int:
    from kertransfer.export import format_predictions, predict

    rows = predict(args.model, args.images, top_k=args.top_k, batch_size=args.batch_size)
    print(json.dumps(rows, indent=2) if args.json else format_predictions(rows))
    return 0


def run_demo(args) -> int:
    from kertransfer.demo import run_demo as demo

    demo(out=args.out, seeds=args.seeds, labels_per_class=args.labels_per_class,
         backbone=args.backbone, quick=args.quick, verbose=args.verbose)
    return 0
