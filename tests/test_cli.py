"""The kertransfer command line."""

import json
import subprocess
import sys

import keras
import pytest

from kertransfer.cli import build_parser, main
from kertransfer.training.fine_tune import HEAD_TEMPERATURE


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "kertransfer", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("backbones", "weights", "cache", "info", "train", "tune", "adapt",
                    "pretrain", "rank", "explain", "report", "lint", "export", "predict", "demo"):
        assert command in out


@pytest.mark.parametrize("command", ["backbones", "weights", "cache", "info", "train", "tune",
                                     "adapt", "pretrain", "rank", "explain", "report", "lint",
                                     "export", "predict", "demo"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: kertransfer " + command in capsys.readouterr().out


def test_backbones_table(capsys):
    assert main(["backbones", "--filter", "resnet*", "--blocks"]) == 0
    out = capsys.readouterr().out
    assert "resnet50" in out and "caffe" in out and "efficientnet" not in out
    assert "resnet50: stem, conv2, conv3, conv4, conv5" in out


def test_tensorflows_python_warnings_are_hidden_unless_asked(capsys):
    import logging

    logger = logging.getLogger("tensorflow")
    level = logger.level
    try:
        logger.setLevel(logging.NOTSET)
        assert main(["-v", "backbones", "--filter", "resnet50"]) == 0
        assert logger.isEnabledFor(logging.WARNING)  # shown with -v
        assert main(["backbones", "--filter", "resnet50"]) == 0
        assert not logger.isEnabledFor(logging.WARNING)  # "triggered tf.function retracing"
        assert logger.isEnabledFor(logging.ERROR)
    finally:
        logger.setLevel(level)


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "commands" in capsys.readouterr().out


def test_freeze_argument_parsing():
    parser = build_parser()
    base = ["train", "--data", "digits", "--backbone", "vgg16", "--out", "x", "--freeze"]
    assert parser.parse_args(base + ["3"]).freeze == 3
    assert parser.parse_args(base + ["0.5"]).freeze == 0.5
    assert parser.parse_args(base + ["block4"]).freeze == "block4"
    assert parser.parse_args(base + ["all", "--weights", "none"]).weights is None
    assert parser.parse_args(base + ["all", "--image-size", "32"]).image_size == (32, 32)


def test_errors_exit_2_with_message(capsys):
    code = main(["train", "--data", "digits", "--backbone", "resnet5", "--out", "x"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Unknown backbone 'resnet5'" in err and "Received: backbone='resnet5'" in err


def test_train_then_info(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", "digits", "--backbone", "mobilenet_v3_small",
                 "--weights", "none", "--image-size", "32", "--freeze", "all",
                 "--freeze-epochs", "0",
                 "--samples-per-class", "5", "--epochs", "1", "--out", str(run),
                 "--verbose", "0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "[3/3] Training 1 epochs" in out and "val_accuracy" in out
    assert "mobilenet_v3_small  all blocks frozen  bn=" in out  # read from the layers
    assert "(scores of the weights after epoch 1)" in out and "No test split" in out
    assert (run / "model.keras").is_file() and (run / "learning_curve.png").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == "mobilenet_v3_small" and config["counts"]["train"] == 50
    assert main(["info", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backbone"] == "mobilenet_v3_small"
    assert {b["state"] for b in info["blocks"] if b["block"] != "head"} == {"frozen"}
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "Received: model=" in capsys.readouterr().err


def test_train_two_phases_with_lr_find(tiny_backbone_name, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", "digits", "--backbone", tiny_backbone_name,
                 "--weights", "none", "--image-size", "16", "--samples-per-class", "5",
                 "--freeze-epochs", "1", "--head-fit", "epochs", "--epochs", "1", "--unfreeze-top",
                 "2", "--lr-find",
                 "--out", str(run), "--verbose", "0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "[3/4] Learning-rate range test" in out and "suggestions" in out
    config = json.loads((run / "config.json").read_text())
    assert [s[0] for s in config["stages"]] == [0, 1]
    assert config["learning_rate"] != 1e-3 and config["unfreeze_top"] == 2
    history = json.loads((run / "history.json").read_text())
    assert len(history["loss"]) == 2
    # The report gathers the run: its curves with the stages, the range test, and the
    # confusion matrix on the run's own validation split.
    assert config["validation_split"] == 0.2 and len(config["lr_find"]["lrs"]) > 5
    assert main(["report", str(run), "--data", "digits"]) == 0
    assert "evaluated on the val split of digits" in capsys.readouterr().out
    page = (run / "report.html").read_text()
    for section in ("Learning curves", "epoch 2: fine-tune", "Learning-rate range test",
                    "Confusion matrix (val split)", "Accuracy per class"):
        assert section in page, section
    assert (run / "confusion_matrix.png").is_file()


def test_schedule_flag(capsys):
    from kertransfer.cli.training import _schedule
    from kertransfer.training import OneCycle, SlantedTriangular, WarmupCosine

    assert isinstance(_schedule("cosine", 1e-3, 100), WarmupCosine)
    assert isinstance(_schedule("onecycle", 1e-3, 100), OneCycle)
    assert isinstance(_schedule("slanted", 1e-3, 100), SlantedTriangular)
    assert _schedule("constant", 1e-3, 100) == 1e-3
    code = main(["train", "--data", "digits", "--backbone", "vgg16", "--out", "x",
                 "--freeze-epochs", "2", "--schedule", "cosine"])
    assert code == 2 and "Received: schedule='cosine', freeze_epochs=2" in capsys.readouterr().err


def test_train_defaults_are_fine_tunes_recipe(tiny_backbone_name, tmp_path, capsys):
    # No phase flags: the head is fitted as a probe, then every block fine-tunes for
    # fine_tune's budget (50 training images in batches of 32: 2 steps an epoch, 150 epochs
    # for 300 steps), early stopping on the validation split.
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--backbone", tiny_backbone_name,
                 "--weights", "none", "--image-size", "16", "--samples-per-class", "5",
                 "--out", str(run), "--verbose", "0"]) == 0
    assert "Fitting the head as a linear probe, then fine-tuning 150 epochs" in \
        capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert (config["head_fit"], config["freeze_epochs"], config["epochs"]) == ("auto", 1, 150)
    assert config["head_temperature"] == HEAD_TEMPERATURE  # the value used, recorded
    assert config["stages"][0][1].startswith("head: linear probe (C=")
    assert config["stages"][1] == [0, "fine-tune (all blocks, lr x0.1)"]
    assert 1 <= len(json.loads((run / "history.json").read_text())["loss"]) <= 150
    # --head-fit epochs trains the head by gradient steps first, then --epochs more.
    assert main(["train", "--data", "digits", "--backbone", tiny_backbone_name,
                 "--weights", "none", "--image-size", "16", "--samples-per-class", "5",
                 "--head-fit", "epochs", "--freeze-epochs", "2", "--epochs", "1",
                 "--out", str(tmp_path / "epochs"), "--verbose", "0"]) == 0
    assert "Training the head 2 epochs, then fine-tuning 1 epochs" in capsys.readouterr().out
    config = json.loads((tmp_path / "epochs" / "config.json").read_text())
    assert [s[0] for s in config["stages"]] == [0, 2]


def test_train_with_regularizers_then_adapt(tiny_backbone_name, tmp_path, capsys):
    source = tmp_path / "source"
    common = ["--backbone", tiny_backbone_name, "--weights", "none", "--image-size", "16",
              "--samples-per-class", "8", "--epochs", "1", "--verbose", "0", "--freeze", "none"]
    assert main(["train", "--data", "digits", *common, "--out", str(source)]) == 0
    # Fine-tune on the shifted digits with both penalties (EWC's Fisher on clean digits).
    tuned = tmp_path / "tuned"
    assert main(["train", "--data", "digits_m", *common[:-2], "--weights",
                 str(source / "model.keras"), "--l2sp", "0.01", "0.001", "--ewc", "10",
                 "--ewc-data", "digits", "--out", str(tuned)]) == 0
    assert "Regularizers: l2sp alpha=0.01 beta=0.001; ewc lambda=10.0 on digits" in \
        capsys.readouterr().out
    assert json.loads((tuned / "config.json").read_text())["regularizers"][0].startswith("l2sp")
    # Each term's value per epoch is in the run's history; the model saves and reloads.
    history = json.loads((tuned / "history.json").read_text())
    assert history["l2sp"][0] > 0 and history["ewc"][0] >= 0
    assert len(keras.saving.load_model(tuned / "model.keras").weights) > 0
    assert main(["train", "--data", "digits_m", *common, "--ewc", "10",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--ewc needs the source data" in capsys.readouterr().err
    # Unsupervised adaptation of the source model to digits_m, scored on its test split.
    adapted = tmp_path / "adapted"
    assert main(["adapt", str(source), "--source", "digits", "--target", "digits_m",
                 "--method", "coral", "--epochs", "1", "--verbose", "0",
                 "--out", str(adapted)]) == 0
    out = capsys.readouterr().out
    assert "Target test accuracy before" in out and "Target test accuracy after" in out
    config = json.loads((adapted / "config.json").read_text())
    assert config["method"] == "coral" and "test_accuracy" in config["metrics"]
    assert len(json.loads((adapted / "history.json").read_text())["loss"]) == 1
    assert main(["adapt", str(source), "--source", "digits", "--target", "digits_m",
                 "--method", "adabn", "--out", str(tmp_path / "bn"), "--verbose", "0"]) == 0


def test_pretrain_then_train_from_the_pretrained_backbone(tiny_backbone_name, tmp_path, capsys):
    out = tmp_path / "rot"
    assert main(["pretrain", "--data", "digits_m", "--backbone", tiny_backbone_name, "--task",
                 "rotation", "--image-size", "16", "--epochs", "1", "--verbose", "0",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Saved the backbone to {out / 'backbone.keras'}" in printed
    assert json.loads((out / "config.json").read_text())["task"] == "rotation"
    assert main(["train", "--data", "digits", "--backbone", tiny_backbone_name, "--weights",
                 str(out / "backbone.keras"), "--image-size", "16", "--samples-per-class", "4",
                 "--epochs", "1", "--verbose", "0", "--out", str(tmp_path / "run")]) == 0
    assert main(["pretrain", "--data", "digits", "--backbone", tiny_backbone_name, "--task",
                 "rotation", "--image-size", "16", "--epochs", "0", "--out", str(tmp_path / "x")]
                ) == 2
    assert "Received: epochs=0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_rank_prints_and_writes_the_candidates_best_first(tiny_backbone_name, tmp_path,
                                                          capsys):
    import csv

    import kertransfer as kt

    run = tmp_path / "run"
    run.mkdir()
    kt.build_transfer_model(tiny_backbone_name, 10, input_shape=(16, 16, 3),
                            weights=None).save(run / "model.keras")
    out = tmp_path / "ranking.csv"
    code = main(["rank", "--data", "digits", "--image-size", "16", "--samples-per-class", "8",
                 "--candidate", "pixels", "--candidate", f"{tiny_backbone_name}=none",
                 "--candidate", str(run), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Ranked by logme on 80 examples of 10 classes" in printed
    rows = list(csv.DictReader(out.open()))
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert {r["candidate"] for r in rows} == {"pixels", f"{tiny_backbone_name}=none", str(run)}
    scores = [float(r["logme"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    leep = {r["candidate"]: r["leep"] for r in rows}
    assert leep["pixels"] == "" and float(leep[str(run)]) < 0  # only the run has a head
    assert main(["rank", "--data", "digits", "--candidate", "resnet5O"]) == 2
    assert "Did you mean" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # ranking trains nothing, so it has no --augment
        main(["rank", "--data", "digits", "--candidate", "pixels", "--augment"])
    assert "unrecognized arguments: --augment" in capsys.readouterr().err


def test_explain_writes_an_overlay_per_image_file(tiny_backbone_name, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    import kertransfer as kt

    run = tmp_path / "run"
    run.mkdir()
    kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(32, 32, 3),
                            weights=None).save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"class_names": ["square", "cross", "frame"]}))
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    for name in ("one", "two"):  # 48 px files: resized to the model's 32 px input
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(
            pictures / f"{name}.png")
    assert main(["explain", str(run), str(pictures), "--out", str(tmp_path / "cams")]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == ["one.png", "two.png"]
    assert "one.png: " in printed and "(p=" in printed and "layer 'backbone'" in printed
    assert any(f": {c} (p=" in printed for c in ("square", "cross", "frame"))
    assert main(["explain", str(run), str(pictures), "--out", str(tmp_path / "x"),
                 "--layer", "nope"]) == 2
    assert "Received: layer='nope'" in capsys.readouterr().err
