"""The parser of the ``kertransfer`` command: one builder per command (the training
commands' builders are in ``training_parser.py``).

Parsing imports no library code (the choices come from `kertransfer._choices`),
so ``--help`` answers without Keras.
"""

from __future__ import annotations

import argparse

from kertransfer._choices import (
    DEMO_TASKS,
    EXPORT_FORMATS,
    RANKING_METRICS,
)
from kertransfer.cli.args import (
    _FORMATTER,
    _add_data_args,
    _class_names_arg,
    _size_arg,
    _weights_arg,
)
from kertransfer.cli.training_parser import _add_adapt, _add_pretrain, _add_train, _add_tune
from kertransfer.version import __version__


def _add_backbones(sub) -> None:
    p = sub.add_parser("backbones", help="list the registered backbones",
                       description="List the registered backbones with their input sizes, "
                       "preprocessing and block counts.", formatter_class=_FORMATTER)
    p.add_argument("--filter", default=None, help="shell-style name filter, e.g. 'efficientnet*'")
    p.add_argument("--family", default=None, help="only this family, e.g. resnet")
    p.add_argument("--blocks", action="store_true", help="also list each backbone's block names")
    p.set_defaults(command="backbones")


def _add_weights(sub) -> None:
    p = sub.add_parser("weights", help="install real ImageNet weights offline, list the cache",
                       description="Manage the weights cache that weights='imagenet' reads "
                       "($KERAS_HOME/models, ~/.keras/models by default). `install` converts "
                       "ImageNet weights from packages of the offline-weights extra (pip "
                       "install -e \".[offline-weights]\"), checks them and installs them "
                       "under Keras' own file names; `list` shows what the cache holds.",
                       formatter_class=_FORMATTER)
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    inst = actions.add_parser("install", help="convert, check and install ImageNet weights",
                              description="Convert the ImageNet weights of each NAME from its "
                              "package (no network), check them (top-1 on sample photos; "
                              "MobileNet v1 also against its original graph) and install them "
                              "atomically into the cache. An installed, unchanged file is left "
                              "alone unless --force.", formatter_class=_FORMATTER)
    inst.add_argument("names", nargs="+", metavar="NAME",
                      help="backbones to install, e.g. mobilenet (kertransfer weights list "
                      "names them all)")
    inst.add_argument("--force", action="store_true",
                      help="convert again and replace files already present")
    inst.add_argument("--cache-dir", default=None,
                      help="folder to install into; None: $KERAS_HOME/models")
    inst.add_argument("--verbose", type=int, default=1, choices=[0, 1],
                      help="0 silent, 1 progress and the checks' results")
    inst.set_defaults(command="weights", action="install")
    lst = actions.add_parser("list", help="show the weights in the cache",
                             description="List the files of the weights cache: those kertransfer "
                             "installed (backbone, size, source, whether unchanged) and Keras' "
                             "other downloads, then the backbones `install` can install.",
                             formatter_class=_FORMATTER)
    lst.add_argument("--cache-dir", default=None,
                     help="folder to list; None: $KERAS_HOME/models")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lst.set_defaults(command="weights", action="list")
    p.set_defaults(command="weights", action=None, _parser=p)


def _add_cache(sub) -> None:
    p = sub.add_parser("cache", help="list or clear the feature cache",
                       description="Backbone features kept on disk by fine_tune, "
                       "train_head_on_features and searches (kertransfer.training.FeatureCache): "
                       "one folder per entry, keyed by backbone, weights, input size, "
                       "preprocessing and data. Default folder: $KERTRANSFER_CACHE_DIR, else "
                       "~/.cache/kertransfer/features.", formatter_class=_FORMATTER)
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    for action, text in (("list", "show the entries, most recently used first"),
                         ("clear", "delete every entry and what interrupted passes left")):
        a = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".",
                               formatter_class=_FORMATTER)
        a.add_argument("--dir", default=None, help="the cache folder; None: the default")
        if action == "list":
            a.add_argument("--json", action="store_true", help="print JSON instead of a table")
        a.set_defaults(command="cache", action=action)
    p.set_defaults(command="cache", action=None, _parser=p)


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="show what trains in a saved model",
                       description="Print the per-block trainable summary of a .keras model "
                       "built by kertransfer (or of model.keras in a run folder).",
                       formatter_class=_FORMATTER)
    p.add_argument("model", help="a .keras file or a run folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(command="info")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="offline demo: ImageNet weights to Fashion-MNIST, then "
                       "export (or --task digits)",
                       description="Transfer real ImageNet weights (MobileNet v1, installed "
                       "offline from the offline-weights extra) to Fashion-MNIST with few labels "
                       "per class, and print held-out accuracy for kertransfer's default recipe "
                       "(fine_tune), a linear probe, the same network from scratch and raw "
                       "pixels; then export the transferred model and predict on held-out "
                       "images saved as PNG. --task digits runs the digits demo instead: "
                       "pretrain on the embedded digits, transfer to digits_m. Runs offline.",
                       formatter_class=_FORMATTER)
    p.add_argument("--task", choices=DEMO_TASKS, default="fashion",
                   help="fashion: ImageNet to Fashion-MNIST; digits: digits to digits_m")
    p.add_argument("--out", default="runs/demo", help="run folder to write")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="seeds to run (the table shows mean and sd over them)")
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--backbone", default=None,
                   help="a registry name (default: mobilenet for fashion, mobilenet_v3_small "
                   "for digits)")
    p.add_argument("--quick", action="store_true", help="fewer epochs (a smoke run)")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                   help="0 silent, 1 steps, 2 also one line per epoch")
    p.set_defaults(command="demo")


def _add_rank(sub) -> None:
    p = sub.add_parser("rank", help="rank candidate backbones for a target, before fine-tuning",
                       description="Score candidate feature extractors on the target's labelled "
                       "images with LogME, LEEP and H-score (one feature pass each, no "
                       "training) and print them best first. A candidate is 'pixels', a "
                       "registry name (with --weights), NAME=WEIGHTS (a weights file, or "
                       "'none' for random weights), or a .keras model / run folder from "
                       "`kertransfer train` (its head gives LEEP).",
                       formatter_class=_FORMATTER)
    _add_data_args(p, augment=False)
    p.set_defaults(validation_split=0.0)
    p.add_argument("--candidate", action="append", required=True, metavar="SPEC",
                   help="a candidate (repeat the flag for each)")
    p.add_argument("--weights", type=_weights_arg, default="imagenet",
                   help="weights of candidates given by name alone")
    p.add_argument("--metrics", nargs="+", default=list(RANKING_METRICS), choices=RANKING_METRICS,
                   help="scores to compute; rows are sorted by the first")
    p.add_argument("--max-examples", type=int, default=None,
                   help="score a stratified sample of at most this many images")
    p.add_argument("--out", default=None, help="also write the ranking to this CSV file")
    p.set_defaults(command="rank")


def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="Grad-CAM heatmaps: where a model looks for a class",
                       description="Write each image with its Grad-CAM heatmap over it as a PNG "
                       "in OUT (the class the model predicts, or --class-index), and print the "
                       "class and its probability per image.", formatter_class=_FORMATTER)
    p.add_argument("model", help="a .keras file or a run folder (kertransfer train)")
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--out", required=True, help="folder for the overlay PNGs")
    p.add_argument("--class-index", type=int, default=None,
                   help="class to explain; None: each image's predicted class (a one-unit "
                   "sigmoid head: its positive class, 1)")
    p.add_argument("--layer", default=None,
                   help="backbone layer with a spatial output; None: the last feature map")
    p.add_argument("--head", default=None, help="the head to explain, for a multi-task model")
    p.set_defaults(command="explain")


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="one HTML page about a run or a search",
                       description="Write RUN/report.html (or --out): the run's settings and "
                       "metrics, its learning curves with the stage markers, its learning-rate "
                       "range test, and for a search the trials plot and results; with --data, "
                       "also the confusion matrix and accuracy per class on --split (written "
                       "beside it as PNGs). Images are inside the page.",
                       formatter_class=_FORMATTER)
    p.add_argument("run", help="a run folder (kertransfer train) or a search folder")
    p.add_argument("--data", default=None,
                   help="data to evaluate on: digits, digits_m, tfds:NAME, or a folder")
    p.add_argument("--image-size", type=_size_arg, default=None,
                   help="image size (default: the run's)")
    p.add_argument("--split", default=None, choices=["train", "val", "test"],
                   help="split of --data to evaluate (default: test if the run held one out, "
                   "else val)")
    p.add_argument("--validation-split", type=float, default=None,
                   help="default: the run's (kertransfer train records it), else 0.2")
    p.add_argument("--test-split", type=float, default=None,
                   help="default: the run's, else 0")
    p.add_argument("--seed", type=int, default=None, help="default: the run's, else 0")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    p.add_argument("--head", default=None, help="the head to evaluate, for a multi-task model")
    p.add_argument("--threshold", type=float, default=None,
                   help="probability a sigmoid head's class must exceed; None: 0.5")
    p.add_argument("--out", default=None, help="the HTML file (default: RUN/report.html)")
    p.set_defaults(command="report", samples_per_class=None, augment=False)


def _add_lint(sub) -> None:
    p = sub.add_parser("lint", help="check a model for the classic fine-tuning bugs",
                       description="Check a .keras model or run folder for BatchNorm training "
                       "in frozen blocks, preprocessing applied twice or missing (on a batch of "
                       "--data), a trainable set changed after compile, a backbone rate above "
                       "the head's, a backbone never trained though meant to be pretrained, "
                       "and a head too large for the training examples. Exits 1 when it finds "
                       "something.", formatter_class=_FORMATTER)
    p.add_argument("model", help="a .keras file or a run folder")
    p.add_argument("--data", default=None,
                   help="training data: a batch is checked, and its size counts the examples")
    p.add_argument("--image-size", type=_size_arg, default=None,
                   help="image size (default: the model's input)")
    p.add_argument("--samples-per-class", type=int, default=None,
                   help="keep this many training examples per class, as the run did")
    p.add_argument("--examples", type=int, default=None,
                   help="training examples (default: the size of --data's train split)")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                   help="whether the backbone should be pretrained (default: as built)")
    p.set_defaults(command="lint", validation_split=0.0, test_split=0.0, augment=False,
                   batch_size=32, seed=0)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a model for serving (SavedModel, TFLite, ONNX)",
                       description="Export a .keras model, a run folder (kertransfer train) or a "
                       "search folder (kertransfer tune) as version OUT/<n>/ (TF Serving's "
                       "layout), check it in a fresh process with its own runtime, and only "
                       "then publish it. The run's class names and training record go into "
                       "kertransfer_export.json.", formatter_class=_FORMATTER)
    p.add_argument("model", help="a .keras file, a run folder or a search folder")
    p.add_argument("--out", required=True, help="serving folder; the version goes inside it")
    p.add_argument("--format", default="saved_model", choices=EXPORT_FORMATS, help="export format")
    p.add_argument("--version", type=int, default=None,
                   help="version number; None: one above the highest present")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p.add_argument("--class-names", type=_class_names_arg, default=None,
                   help="a,b,c or @FILE (one per line); None: the run's, else 0, 1, ... "
                   "(a one-unit sigmoid head takes two: negative,positive)")
    p.add_argument("--threshold", type=float, default=None,
                   help="probability a sigmoid head's class must exceed; None: 0.5")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="compare the export with the model in a fresh process before "
                   "publishing it")
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest absolute difference the check allows; None: 1e-5, or "
                   "1e-4 for tflite and onnx")
    p.add_argument("--quiet", action="store_true", help="print only the version folder")
    p.set_defaults(command="export")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify image files with an export or a model",
                       description="Print the top classes of each image. MODEL is an export "
                       "version folder (any format), a serving folder (its highest version), "
                       "a .tflite/.onnx/.keras file, a run folder or a search folder; IMAGES are "
                       "files or folders (searched recursively).", formatter_class=_FORMATTER)
    p.add_argument("model", help="export, serving folder, model file, run or search folder")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=int, default=3, help="classes to show per image")
    p.add_argument("--threshold", type=float, default=None,
                   help="probability a sigmoid head's class must exceed; None: the "
                   "export's (0.5)")
    p.add_argument("--batch-size", type=int, default=32, help="images per model call")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(command="predict")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kertransfer`` command."""
    parser = argparse.ArgumentParser(
        prog="kertransfer",
        description="Transfer learning for Keras 3: backbones, offline ImageNet weights, "
        "freezing, training, search, domain adaptation, pretraining, backbone ranking, Grad-CAM, "
        "run reports, lint, export, demo.",
    )
    parser.add_argument("--version", action="version", version=f"kertransfer {__version__}")
    parser.add_argument("-v", "--backend-logs", action="store_true",
                        help="show the backend's start-up lines (TensorFlow's absl and CUDA "
                        "messages) and its Python warnings, hidden by default")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_backbones(sub)
    _add_weights(sub)
    _add_cache(sub)
    _add_info(sub)
    _add_train(sub)
    _add_tune(sub)
    _add_adapt(sub)
    _add_pretrain(sub)
    _add_rank(sub)
    _add_explain(sub)
    _add_report(sub)
    _add_lint(sub)
    _add_export(sub)
    _add_predict(sub)
    _add_demo(sub)
    return parser
