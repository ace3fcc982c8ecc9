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


def run_train(args) -> int:
    from kertransfer.backbones import get_backbone_spec
    from kertransfer.data import load
    from kertransfer.freezing import trainable_summary
    from kertransfer.models import build_transfer_model
    from kertransfer.training import train

    spec = get_backbone_spec(args.backbone)
    size = args.image_size or (spec.default_size, spec.default_size)
    print(f"[1/3] Loading data {args.data!r} at {size[0]}x{size[1]}")
    data = load(args.data, image_size=size, batch_size=args.batch_size,
                validation_split=args.validation_split, test_split=args.test_split,
                samples_per_class=args.samples_per_class, augment=args.augment or None,
                seed=args.seed)
    print(data.summary())
    print(f"[2/3] Building {spec.name} (weights={args.weights}, freeze={args.freeze}, "
          f"bn={args.bn})")
    model = build_transfer_model(
        spec.name, data.num_classes, input_shape=(*size, 3), weights=args.weights,
        freeze=args.freeze, bn=args.bn, dropout=args.dropout, head_units=tuple(args.head_units),
    )
    trainable_summary(model)
    print(f"[3/3] Training {args.epochs} epochs")
    config = {
        "data": args.data, "image_size": list(size), "batch_size": args.batch_size,
        "backbone": spec.name, "weights": args.weights, "freeze": args.freeze, "bn": args.bn,
        "dropout": args.dropout, "head_units": args.head_units, "optimizer": args.optimizer,
        "seed": args.seed, "class_names": data.class_names, "counts": data.counts,
    }
    result = train(model, data, epochs=args.epochs, learning_rate=args.lr,
                   optimizer=args.optimizer, out=args.out, config=config, verbose=args.verbose)
    for key, value in result.metrics.items():
        print(f"{key}: {value:.4f}")
    print(f"Saved the run to {result.out}")
    return 0


def run_demo(args) -> int:
    from kertransfer.demo import run_demo as demo

    demo(out=args.out, seeds=args.seeds, labels_per_class=args.labels_per_class,
         backbone=args.backbone, quick=args.quick, verbose=args.verbose)
    return 0
