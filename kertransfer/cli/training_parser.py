"""The parsers of the training commands of ``kertransfer``: train, tune, adapt, pretrain."""

from __future__ import annotations

from kertransfer._choices import ADAPTATION_METHODS, PRETEXT_TASKS
from kertransfer.cli.args import (
    _FORMATTER,
    _add_data_args,
    _freeze_arg,
    _space_arg,
    _weights_arg,
)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a transfer model and save the run",
                       description="Build a transfer model, train it, and write the run folder "
                       "given by --out with model.keras, config.json, history.json and "
                       "learning_curve.png.", formatter_class=_FORMATTER)
    _add_data_args(p)
    p.add_argument("--backbone", required=True, help="a registry name (kertransfer backbones)")
    p.add_argument("--weights", type=_weights_arg, default="imagenet",
                   help="imagenet, none, or a .keras / .weights.h5 file")
    p.add_argument("--freeze", type=_freeze_arg, default="all",
                   help="with --freeze-epochs 0: what stays frozen (all, none, N blocks from "
                   "the bottom, a fraction, or a block name)")
    p.add_argument("--bn", default="frozen", choices=["frozen", "trainable"],
                   help="frozen: every BatchNorm layer stays in inference mode")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout rate in the head")
    p.add_argument("--head-units", type=int, nargs="*", default=[],
                   help="widths of extra dense layers in the head")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of fine-tuning (default: 10, and at least 300 steps, as "
                   "kt.fine_tune); with --freeze-epochs 0, epochs of the one phase (default 10)")
    p.add_argument("--learning-rate", "--lr", dest="learning_rate", type=float, default=1e-3,
                   help="learning rate (of the head with --head-fit epochs; fine-tuning "
                   "runs at learning rate x --learning-rate-multiplier)")
    p.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"],
                   help="optimizer")
    p.add_argument("--freeze-epochs", type=int, default=1,
                   help="kt.fine_tune's two phases: fit the head on the frozen backbone "
                   "(see --head-fit), then fine-tune (--unfreeze-top) for --epochs; 0: one phase "
                   "that trains what --freeze leaves trainable")
    p.add_argument("--head-fit", default="auto", choices=["auto", "epochs", "probe"],
                   help="how the head is fitted first: probe, a logistic-regression probe "
                   "solved on the frozen features; epochs, --freeze-epochs epochs of "
                   "gradient steps; auto, the probe when the head is one dense layer")
    p.add_argument("--head-temperature", type=float, default=None,
                   help="with a probe head, fine-tuning starts from its weights divided by "
                   "this (default: kt.fine_tune's)")
    p.add_argument("--unfreeze-top", type=_freeze_arg, default="all",
                   help="blocks to fine-tune, counted from the top (all or N)")
    p.add_argument("--learning-rate-multiplier", type=float, default=0.1,
                   help="fine-tuning rate = learning rate x this (two phases)")
    p.add_argument("--schedule", default="constant",
                   choices=["constant", "cosine", "onecycle", "slanted"],
                   help="learning-rate schedule over the run (with --freeze-epochs 0)")
    p.add_argument("--lr-find", action="store_true",
                   help="run the learning-rate range test first and use its suggestion")
    p.add_argument("--l2sp", type=float, nargs="+", default=None, metavar="ALPHA [BETA]",
                   help="L2-SP: pull the backbone to its pretrained weights with strength "
                   "ALPHA, decay the head with BETA (default BETA=ALPHA)")
    p.add_argument("--ewc", type=float, default=None, metavar="LAMBDA",
                   help="EWC: penalize moving weights that matter to the source task (the "
                   "Fisher is computed on --ewc-data with the model's own head)")
    p.add_argument("--ewc-data", default=None,
                   help="with --ewc: the source data (digits, digits_m, tfds:NAME or a folder)")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--verbose", type=int, default=2, choices=[0, 1, 2],
                   help="0 silent, 1 progress bars, 2 one line per epoch")
    p.set_defaults(command="train")


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="search freeze depth, learning rates and dropout",
                       description="Run a KerasTuner search of a TransferHyperModel: every "
                       "trial trains the head on the frozen backbone (on cached features), "
                       "then unfreezes the searched number of top blocks. Re-running on the "
                       "same --dir resumes the search. Writes results.csv, best_config.json, "
                       "best_model.keras and trials.png to --dir.",
                       formatter_class=_FORMATTER)
    _add_data_args(p)
    p.add_argument("--backbone", required=True, nargs="+",
                   help="one or more registry names (several: the backbone is searched too)")
    p.add_argument("--weights", type=_weights_arg, default="imagenet",
                   help="imagenet, none, or a .keras / .weights.h5 file")
    p.add_argument("--tuner", default="random", choices=["random", "bayesian", "hyperband"],
                   help="KerasTuner's search algorithm")
    p.add_argument("--max-trials", type=int, default=10,
                   help="trials to run (random, bayesian)")
    p.add_argument("--epochs", type=int, default=10,
                   help="epochs per trial, both phases (hyperband: the most per trial)")
    p.add_argument("--space", type=_space_arg, nargs="*", default=[],
                   metavar="KNOB=SPEC",
                   help="change the space: dropout=0.3 (fixed), head_learning_rate=1e-4:1e-2 "
                   "(range), bn=frozen,trainable (choices); knobs: unfreeze_top, "
                   "head_learning_rate, fine_tune_learning_rate, dropout, bn, head_units, "
                   "head_epochs, decay")
    p.add_argument("--objective", default="val_accuracy", help="metric to optimize")
    p.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"],
                   help="optimizer")
    p.add_argument("--dir", required=True, help="search folder (resumed when it exists)")
    p.add_argument("--overwrite", action="store_true",
                   help="start the search again instead of resuming it")
    p.add_argument("--trials-per-process", type=int, default=None,
                   help="run the search in child processes of at most this many trials each "
                   "(bounds whatever memory a process keeps between trials)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="train in mixed_float16 (for GPUs; the outputs stay float32)")
    p.add_argument("--distributed", default=None, choices=["chief", "worker"],
                   help="KerasTuner's chief/worker mode; all processes share --dir")
    p.add_argument("--oracle-address", default=None,
                   help="with --distributed: the chief's host:port")
    p.add_argument("--tuner-id", default=None,
                   help="with --distributed: this process's id (restart a dead worker with "
                   "its id to hand its trial back)")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                   help="0 silent, 1 progress bars, 2 one line per epoch")
    p.set_defaults(command="tune")


def _add_adapt(sub) -> None:
    p = sub.add_parser("adapt", help="adapt a model to an unlabelled target domain",
                       description="Unsupervised domain adaptation of a trained model (a .keras "
                       "file or a run folder): AdaBN replaces the BatchNorm statistics with the "
                       "target's; DANN and Deep CORAL train on batches of labelled source and "
                       "unlabelled target images. Target labels are never trained on; when the "
                       "target has them, its test split is scored before and after.",
                       formatter_class=_FORMATTER)
    p.add_argument("model", help="the source model: a .keras file or a run folder")
    p.add_argument("--source", required=True, help="labelled source data (as --data of train)")
    p.add_argument("--target", required=True, help="target images (labels ignored)")
    p.add_argument("--method", default="dann", choices=ADAPTATION_METHODS, help="adaptation method")
    p.add_argument("--epochs", type=int, default=20, help="passes over the source data")
    p.add_argument("--learning-rate", "--lr", dest="learning_rate", type=float, default=1e-3,
                   help="learning rate (DANN anneals it)")
    p.add_argument("--weight", type=float, default=1.0,
                   help="weight of the domain term (CORAL's lambda, DANN's domain loss)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of each domain")
    p.add_argument("--test-split", type=float, default=0.3,
                   help="fraction of the target held out for scoring (needs its labels)")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, shuffling and init")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                   help="0 silent, 1 progress bars, 2 one line per epoch")
    p.set_defaults(command="adapt")


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain a backbone (supervised or self-supervised)",
                       description="Pretrain a backbone on a source task and save it as "
                       "OUT/backbone.keras, which `train --weights` and "
                       "build_transfer_model(weights=...) load. supervised uses the labels; "
                       "rotation (predict 0/90/180/270 degrees), simclr (two augmented views, "
                       "NT-Xent loss) and autoencoder (reconstruct the input) ignore them.",
                       formatter_class=_FORMATTER)
    p.add_argument("--data", required=True,
                   help="source: digits, digits_m, tfds:NAME, or an image folder")
    p.add_argument("--backbone", required=True, help="registry name (kertransfer backbones)")
    p.add_argument("--task", default="simclr", choices=PRETEXT_TASKS, help="pretext task")
    p.add_argument("--image-size", type=int, default=32, help="square input size in pixels")
    p.add_argument("--weights", type=_weights_arg, default=None,
                   help="starting weights: none, imagenet, or a .keras / .weights.h5 file")
    p.add_argument("--epochs", type=int, default=10, help="passes over the data")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch")
    p.add_argument("--learning-rate", "--lr", dest="learning_rate", type=float, default=1e-3,
                   help="Adam's learning rate")
    p.add_argument("--temperature", type=float, default=0.5, help="simclr: NT-Xent temperature")
    p.add_argument("--projection-dim", type=int, default=64,
                   help="simclr: width of the projection output")
    p.add_argument("--seed", type=int, default=0, help="seed of init, shuffling, augmentation")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                   help="0 silent, 1 progress bars, 2 one line per epoch")
    p.set_defaults(command="pretrain")
