"""The ``kertransfer`` commands that inspect, rank, explain and ship: each turns parsed
arguments into library calls (the training commands are in ``training.py``)."""

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


def run_cache(args) -> int:
    import datetime

    from kertransfer.training.feature_store import FeatureCache

    if args.action is None:
        args._parser.print_help()
        return 2
    cache = FeatureCache(args.dir)
    if args.action == "clear":
        print(f"Deleted {cache.clear()} entries from {cache.directory}")
        return 0
    rows = cache.entries()
    if args.json:
        print(json.dumps({"directory": str(cache.directory), "entries": rows}, indent=2))
        return 0
    if not rows:
        print(f"No cached features in {cache.directory}")
        return 0
    _table([("key", "examples", "shape", "dtype", "size", "last used")] + [
        (r["key"], str(r["rows"]), "x".join(map(str, r["row_shape"])), r["dtype"],
         f"{r['bytes'] / 1e6:.1f} MB",
         datetime.datetime.fromtimestamp(r["last_used"]).strftime("%Y-%m-%d %H:%M"))
        for r in rows])
    print(f"\n{len(rows)} entries, {sum(r['bytes'] for r in rows) / 1e6:.1f} MB in "
          f"{cache.directory}")
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


def _load_data(args, size):
    """The data bundle the --data flags describe, at ``size``."""
    from kertransfer.data import load

    return load(args.data, image_size=size, batch_size=args.batch_size,
                validation_split=args.validation_split, test_split=args.test_split,
                samples_per_class=args.samples_per_class, augment=args.augment or None,
                seed=args.seed)
