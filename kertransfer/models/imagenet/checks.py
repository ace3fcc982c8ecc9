"""The parity checks every converter runs before its files are installed.

- **Top-1 on two real photos** that scikit-image ships (``skimage.data``):
  ``chelsea``, a cat (ImageNet classes 281-285: tabby, tiger cat, Persian,
  Siamese, Egyptian cat), and ``coffee``, a cup of espresso (967). The photo
  is resized to the network's input (bilinear, antialiased, as kertransfer's
  data pipeline does) and goes through kertransfer's `Preprocess` layer with
  the backbone's preprocessing mode, so the check also proves that the mode
  in the registry is the one the weights were trained with.
- **Outputs against the original**: `max_abs_diff` on the same inputs, with a
  tolerance.

A failed check raises `WeightsConversionError`; `install_weights` then
installs nothing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np

from kertransfer._log import print_msg
from kertransfer.errors import MissingDependencyError, WeightsConversionError, format_message
from kertransfer.models.layers import Preprocess

INSTALL_EXTRA = 'pip install -e ".[offline-weights]"'

#: Photo name: the ImageNet classes (0-999, without a background class) that count as right.
EXPECTED = {"chelsea": (281, 282, 283, 284, 285), "coffee": (967,)}
CLASS_NAMES = {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat",
               285: "Egyptian cat", 967: "espresso"}
#: The expected classes together must hold at least this probability.
MIN_PROBABILITY = 0.5


def missing_extra(package: str, purpose: str) -> MissingDependencyError:
    """The error for a package of the ``offline-weights`` extra that is not installed."""
    return MissingDependencyError(
        format_message(
            f"{purpose} needs the package {package!r}, which is not installed.",
            fix=f"Install the offline-weights extra: {INSTALL_EXTRA} (or pip install "
                f"kertransfer[offline-weights]).",
            received={"package": package},
        )
    )


def sample_photos() -> dict[str, np.ndarray]:
    """The two photos of the top-1 check, as uint8 RGB arrays of their own size.

    Raises:
        MissingDependencyError: scikit-image is not installed.
    """
    if importlib.util.find_spec("skimage") is None:
        raise missing_extra("scikit-image", "The top-1 check on sample photos")
    import skimage.data

    return {name: np.asarray(getattr(skimage.data, name)(), dtype="uint8") for name in EXPECTED}


def photo_batch(size: tuple[int, int]) -> tuple[list[str], np.ndarray]:
    """The sample photos resized to ``size``, as raw 0-255 float32 RGB (N, H, W, 3)."""
    from keras import ops

    photos = sample_photos()
    names = list(photos)
    batch = [ops.convert_to_numpy(ops.image.resize(
        photos[n][None].astype("float32"), size, interpolation="bilinear", antialias=True))[0]
        for n in names]
    return names, np.stack(batch).astype("float32")


def preprocess(images: np.ndarray, mode: str) -> np.ndarray:
    """``images`` (raw 0-255 RGB) through kertransfer's `Preprocess` layer in ``mode``."""
    from keras import ops


    return ops.convert_to_numpy(Preprocess(mode)(images))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def check_top1(classify: Callable[[np.ndarray], np.ndarray], *, name: str, preprocessing: str,
               size: tuple[int, int], from_logits: bool = False, verbose: int = 1) -> dict:
    """Classify the sample photos and fail unless each lands in its ImageNet classes.

    Args:
        classify: Maps preprocessed images ``(N, H, W, 3)`` to 1000 ImageNet
            scores per image (probabilities, or logits with ``from_logits``).
        name: The backbone, for messages.
        preprocessing: The backbone's preprocessing mode (its spec's).
        size: The input height and width.
        from_logits: Whether ``classify`` returns logits.
        verbose: Print one line per photo when positive.

    Returns:
        ``{photo: {"top1", "class", "probability", "expected_probability",
        "expected", "ok"}}``.

    Raises:
        WeightsConversionError: A photo's top-1 class is not one of its
            expected classes, or they hold less than `MIN_PROBABILITY`.
    """
    names, images = photo_batch(size)
    scores = np.asarray(classify(preprocess(images, preprocessing)), dtype="float64")
    if scores.shape != (len(names), 1000):
        raise WeightsConversionError(
            format_message(f"The converted {name} classifier gives scores of shape "
                           f"{scores.shape} for {len(names)} photos.",
                           expected="1000 ImageNet classes per image",
                           received={"backbone": name}))
    probs = _softmax(scores) if from_logits else scores
    result, failed = {}, []
    for photo, p in zip(names, probs):
        expected = EXPECTED[photo]
        top1 = int(np.argmax(p))
        mass = float(p[list(expected)].sum())
        ok = top1 in expected and mass >= MIN_PROBABILITY
        result[photo] = {"top1": top1, "class": CLASS_NAMES.get(top1, "?"),
                         "probability": float(p[top1]), "expected_probability": mass,
                         "expected": list(expected), "ok": ok}
        if verbose:
            want = (f"{expected[0]}-{expected[-1]}" if len(expected) > 1 else str(expected[0]))
            print_msg(f"  top-1 on {photo!r}: class {top1} ({CLASS_NAMES.get(top1, '?')}) at "
                      f"{p[top1]:.3f} (expected {want}) {'ok' if ok else 'FAILED'}")
        if not ok:
            failed.append(f"{photo}: class {top1} at {p[top1]:.3f}, expected classes "
                          f"{list(expected)} with {mass:.3f}")
    if failed:
        raise WeightsConversionError(
            format_message(
                f"The converted ImageNet weights of {name!r} misclassify the sample photos "
                f"({'; '.join(failed)}); nothing was installed.",
                expected=f"each photo's top-1 class among its expected classes, which hold at "
                         f"least {MIN_PROBABILITY} of the probability",
                received={"backbone": name, "preprocessing": preprocessing},
            )
        )
    return result


def max_abs_diff(a, b) -> float:
    """The largest absolute difference between two arrays of the same shape."""
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def check_close(measured: float, tolerance: float, *, name: str, what: str,
                verbose: int = 1) -> dict:
    """Fail unless ``measured`` (a `max_abs_diff`) is within ``tolerance``.

    Returns:
        ``{"max_abs_diff", "tolerance", "ok"}``.

    Raises:
        WeightsConversionError: The difference exceeds the tolerance.
    """
    ok = measured <= tolerance
    if verbose:
        print_msg(f"  {what}: max |difference| {measured:.2g} (tolerance {tolerance:g}) "
                  f"{'ok' if ok else 'FAILED'}")
    if not ok:
        raise WeightsConversionError(
            format_message(
                f"The converted ImageNet weights of {name!r} differ from the original: "
                f"{what}, max |difference| {measured:.3g}; nothing was installed.",
                expected=f"at most {tolerance:g}",
                received={"backbone": name},
            )
        )
    return {"max_abs_diff": measured, "tolerance": tolerance, "ok": ok}
