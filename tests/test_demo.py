"""The offline demos: digits on the tiny registered backbone, ImageNet MobileNet v1 on
Fashion-MNIST (quick epochs)."""

import functools
import json

from kertransfer.cli import demo


def test_quick_demo_runs_staged_transfer_and_saves_the_run(tiny_backbone_name, tmp_path,
                                                           capsys, monkeypatch):
    calls = []
    import kertransfer.training as training

    original = training.fine_tune

    def recording_fine_tune(model, data, **kwargs):
        calls.append(kwargs)
        return original(model, data, **kwargs)

    monkeypatch.setattr(training, "fine_tune", recording_fine_tune)
    out = demo.run_demo(out=str(tmp_path / "run"), seeds=(0,), backbone=tiny_backbone_name,
                        quick=True, task="digits", verbose=1)
    printed = capsys.readouterr().out

    # The transfer arm is the two-stage recipe: head first, then the whole network.
    assert len(calls) == 1
    assert calls[0]["freeze_epochs"] >= 1 and calls[0]["epochs"] >= 1
    assert calls[0]["patience"] is None  # fixed budget, no selection on the val split
    assert "kertransfer.fine_tune" in printed

    arms = set(out["per_seed"][0]["test_accuracy"])
    assert arms == {"source model, no target labels", "transfer (pretrained on digits)",
                    "scratch (random init)", "raw-pixel logistic regression"}
    for value in out["per_seed"][0]["test_accuracy"].values():
        assert 0.0 <= value <= 1.0
    for arm in arms:
        assert arm in out["table"]

    run = out["out"]
    assert (run / "model.keras").exists() and (run / "learning_curve.png").exists()
    assert json.loads((run / "results.json").read_text())[0]["seed"] == 0
    history = json.loads((run / "history.json").read_text())
    # One history across both stages: quick mode runs 3 target epochs in all.
    assert len(history["loss"]) == 3
    assert not list(tmp_path.glob("run/.*"))  # nothing half-written beside the run

    # The demo ends by exporting the model and predicting on PNGs it saved.
    version = out["export"]
    assert version == run / "serving" / "1"
    meta = json.loads((version / "kertransfer_export.json").read_text())
    assert meta["classes"] == [str(i) for i in range(10)]
    assert max(meta["parity"]["max_abs_diff"].values()) <= meta["parity"]["tolerance"]
    pngs = sorted(p.name for p in (run / "samples").iterdir())
    assert len(pngs) == 6 and all(name.endswith(".png") for name in pngs)
    assert f"$ kertransfer predict {version}" in printed
    table = printed.split(f"$ kertransfer predict {version}")[1].splitlines()
    assert table[1].split() == ["file", "top-1", "top-2"]
    assert sum(".png" in line for line in table) == 6


def test_quick_imagenet_demo_transfers_to_fashion_mnist(keras_home, tmp_path, capsys,
                                                       monkeypatch):
    # The export's parity run in a fresh process (7 s) is checked by the digits demo above.
    import kertransfer.serving as serving

    monkeypatch.setattr(serving, "export", functools.partial(serving.export, check=False))
    out = demo.run_demo(out=str(tmp_path / "run"), seeds=(0,), quick=True, verbose=1)
    printed = capsys.readouterr().out
    arms = list(out["per_seed"][0]["test_accuracy"])
    assert arms == ["fine_tune (ImageNet mobilenet, defaults)",
                    "linear probe (ImageNet features)", "scratch (random init)",
                    "raw-pixel logistic regression"]
    scores = out["per_seed"][0]["test_accuracy"]
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    # Real ImageNet features separate clothing well above chance with 100 labels.
    assert scores["linear probe (ImageNet features)"] > 0.5
    assert "held-out Fashion-MNIST accuracy" in out["table"]
    meta = json.loads((out["export"] / "kertransfer_export.json").read_text())
    assert meta["classes"][0] == "T-shirt/top"
    pngs = sorted(p.name for p in (out["out"] / "samples").iterdir())
    assert len(pngs) == 6 and all("/" not in name for name in pngs)
    assert f"$ kertransfer predict {out['export']}" in printed
