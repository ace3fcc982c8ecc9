"""Data beyond memory: peak resident memory of `fine_tune` and `tune` on a folder of PNGs.

Fashion-MNIST's 60,000 training images (Debian's ``dataset-fashion-mnist``,
or ``--idx-dir`` with the four IDX files) are written once as a folder of PNG
files, one subfolder per class, and loaded with `kertransfer.data.load` at
``--image-size`` (128: 60,000 images are 11.8 GB as float32 pixels).
Each measurement runs in a fresh process and reports its peak resident set
size (``ru_maxrss``):

- ``fine_tune``: MobileNet v1 (ImageNet weights, installed with ``kertransfer
  weights install mobilenet``), phase 1 on cached features (one epoch,
  ``head_fit="epochs"``), then one epoch fine-tuning the top two blocks,
  at each of ``--sizes`` images per source (``samples_per_class``; 5% of the
  folder is held out for validation first, so 60,000 gives 57,000 training
  images);
- baseline: the same at the smallest size after loading the split into
  arrays (`DataBundle.as_numpy`, what earlier versions did);
- ``tune``: a 4-trial random search (phase 1 one epoch on shared cached
  features, phase 2 one epoch of the top block) at the largest size;
- throughput: the feature pass that writes the cache
  (`FeatureCache.features`) against a plain ``model.predict`` of a feature
  extractor of the same model over the same ``tf.data`` pipeline, on
  ``--throughput-images`` images, in one process, each pass building its
  own extractor, alternating ``ROUNDS`` times and keeping each one's best.

Goals (issue: data beyond memory): peak memory at most 3 GiB for each;
feature pass at least 0.9x ``predict``'s throughput; peak memory flat
(within 10%) from the smallest to the largest size.

Usage::

    python benchmarks/bench_scale.py [--sizes 15000 30000 60000] [--image-size 128]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

DEBIAN = pathlib.Path("/usr/share/datasets/fashion-mnist")
FOLDER = pathlib.Path(os.path.expanduser("~/.cache/kertransfer-bench-scale/fashion-png"))
GIB = 2**30
#: Alternating rounds of the throughput comparison (this machine's speed drifts by a third
#: between minutes; the best of each side over several rounds is what it can do).
ROUNDS = 4


def _idx(path: pathlib.Path, offset: int):
    import numpy as np

    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def write_folder(idx_dir: pathlib.Path, folder: pathlib.Path) -> None:
    """The 60,000 training images as PNG files in ``folder/<class>/`` (once)."""
    if (folder / "COMPLETE").is_file():
        return
    from PIL import Image

    images = _idx(idx_dir / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = _idx(idx_dir / "train-labels-idx1-ubyte.gz", 8)
    print(f"Writing {len(images)} PNG files to {folder}", flush=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        cls = folder / f"class{label}"
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(cls / f"{i:05d}.png")
    (folder / "COMPLETE").write_text(str(len(images)))


def _load(folder, size: int, train: int):
    import kertransfer as kt

    return kt.data.load(folder, image_size=(size, size), batch_size=64, validation_split=0.05,
                        samples_per_class=train // 10, seed=0, verbose=0)


def child(mode: str, folder: str, size: int, train: int) -> dict:
    """One measurement, in this process; returns what it measured."""
    import kertransfer as kt

    data = _load(folder, size, train)
    start = time.perf_counter()
    out: dict = {"mode": mode, "train": data.counts["train"], "val": data.counts["val"]}
    if mode in ("fine_tune", "baseline"):
        model = kt.build_transfer_model("mobilenet", 10, input_shape=(size, size, 3),
                                        weights="imagenet")
        arg, val = data, None
        if mode == "baseline":  # every split in memory as arrays first
            arg, val = data.as_numpy("train"), data.as_numpy("val")
        result = kt.fine_tune(model, arg, validation_data=val, head_fit="epochs",
                              freeze_epochs=1, epochs=1, unfreeze_top=2, patience=None,
                              verbose=0)
        out["val_accuracy"] = result.metrics.get("val_accuracy")
    elif mode == "tune":
        hm = kt.TransferHyperModel("mobilenet", num_classes=10, input_shape=(size, size, 3),
                                   weights="imagenet", epochs=2, batch_size=64,
                                   space={"head_epochs": 1, "unfreeze_top": 1})
        with tempfile.TemporaryDirectory(prefix="kt-bench-scale-") as tmp:
            result = kt.tune(hm, data, max_trials=4, epochs=2, directory=tmp, verbose=0)
        out["trials"] = sum(r["status"] == "COMPLETED" for r in result.results)
        out["passes"] = hm.features.passes
    elif mode == "throughput":
        out.update(_throughput(data, size))
    out["seconds"] = time.perf_counter() - start
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    return out


def _throughput(data, size: int) -> dict:
    import kertransfer as kt
    from kertransfer.data.batches import as_batches
    from kertransfer.models.surgery import feature_extractor

    model = kt.build_transfer_model("mobilenet", 10, input_shape=(size, size, 3),
                                    weights="imagenet")
    n = data.counts["train"]
    best = {"predict": float("inf"), "feature_pass": float("inf")}
    for _ in range(ROUNDS):  # each pass builds (and compiles) its own extractor, as a user's
        start = time.perf_counter()
        feature_extractor(model).predict(as_batches(data, "data", images_only=True), verbose=0)
        best["predict"] = min(best["predict"], time.perf_counter() - start)
        with tempfile.TemporaryDirectory(prefix="kt-bench-scale-") as tmp:
            start = time.perf_counter()
            kt.training.FeatureCache(tmp).features(model, data, verbose=0)
            best["feature_pass"] = min(best["feature_pass"], time.perf_counter() - start)
    return {"predict_images_per_s": n / best["predict"],
            "feature_pass_images_per_s": n / best["feature_pass"]}


def _run_child(mode: str, folder, size: int, train: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--folder", str(folder),
           "--image-size", str(size), "--sizes", str(train)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} at {train} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def _report_fine_tune(runs: dict, baseline: dict | None, size: int) -> list[str]:
    """Print the fine_tune rows (and the baseline's); returns the notes for the table."""
    rows = [runs[n] for n in sorted(runs)]
    peaks = [r["peak_rss_gib"] for r in rows]
    counts = [r["train"] for r in rows]  # training images (the rest is validation)
    growth = peaks[-1] / peaks[0]
    pixels = counts[-1] * size * size * 3 * 4 / 1e9
    print("\nfine_tune (cached head epoch + top-2-block epoch), peak resident memory:")
    for r in rows:
        print(f"  {r['train']:>6} images: {r['peak_rss_gib']:.2f} GiB ({r['seconds']:.0f} s)")
    print(f"  growth {counts[0]} -> {counts[-1]}: x{growth:.3f} (goal: at most 1.10); "
          f"the pixels of {counts[-1]} images are {pixels:.1f} GB as float32")
    notes = [f"fine_tune peak {' / '.join(f'{p:.2f}' for p in peaks)} GiB at "
             f"{' / '.join(map(str, counts))} training images (x{growth:.3f})"]
    if baseline is not None:
        b = baseline["peak_rss_gib"]
        print(f"  baseline (split loaded as arrays) at {baseline['train']}: {b:.2f} GiB, "
              f"x{b / peaks[0]:.2f} the streamed run at {counts[0]}")
        notes.append(f"arrays at {baseline['train']}: {b:.2f} GiB")
    return notes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[15000, 30000, 60000])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--folder", default=str(FOLDER))
    parser.add_argument("--idx-dir", default=str(DEBIAN))
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["fine_tune", "baseline", "tune", "throughput"])
    parser.add_argument("--throughput-images", type=int, default=6000)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.folder, args.image_size, args.sizes[0])))
        return 0
    from _common import append_row, machine

    folder = pathlib.Path(args.folder)
    write_folder(pathlib.Path(args.idx_dir), folder)
    size, sizes = args.image_size, sorted(args.sizes)
    print(f"{machine()}; MobileNet v1 ImageNet at {size}x{size}, PNG folder {folder}",
          flush=True)
    start = time.perf_counter()
    runs = {n: _run_child("fine_tune", folder, size, n) for n in sizes
            if "fine_tune" not in args.skip}
    at = {"throughput": args.throughput_images, "baseline": sizes[0], "tune": sizes[-1]}
    extra = {m: _run_child(m, folder, size, at[m])
             for m in ("throughput", "baseline", "tune") if m not in args.skip}
    notes = _report_fine_tune(runs, extra.get("baseline"), size) if runs else []
    if "tune" in extra:
        t = extra["tune"]
        print(f"tune, 4 trials at {t['train']}: {t['peak_rss_gib']:.2f} GiB "
              f"({t['trials']} trials, {t['passes']} feature passes, {t['seconds']:.0f} s)")
        notes.append(f"4-trial tune at {t['train']}: {t['peak_rss_gib']:.2f} GiB")
    ratio = None
    if "throughput" in extra:
        t = extra["throughput"]
        ratio = t["feature_pass_images_per_s"] / t["predict_images_per_s"]
        print(f"feature pass {t['feature_pass_images_per_s']:.0f} images/s vs predict "
              f"{t['predict_images_per_s']:.0f} images/s: x{ratio:.3f} (goal: at least 0.9)")
    print(f"total {time.perf_counter() - start:.0f} s")
    if not args.no_record:
        t = extra.get("throughput", {})
        append_row("bench_scale", f"{machine()}; MobileNet v1 ImageNet {size}px, Fashion-MNIST "
                   "PNG folder", f"feature pass {t.get('feature_pass_images_per_s', 0):.0f} img/s",
                   f"predict {t.get('predict_images_per_s', 0):.0f} img/s", ratio,
                   "; ".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
