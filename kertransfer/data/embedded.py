"""Embedded datasets that need no download: ``digits`` and ``digits_m``.

``digits``
    scikit-learn's ``load_digits()``: 1,797 real 8x8 handwritten digits
    (values 0..16, about 180 per class) scanned by UCI. Each image is scaled to
    0..255, upsampled to ``image_size`` with bilinear interpolation, and the
    gray channel is copied to R, G and B.

``digits_m``
    The same digits blended MNIST-M style (Ganin & Lempitsky, 2015), a
    shifted target domain for the clean digits. For digit ``i`` a generator
    with the fixed seed ``2015`` draws one of scikit-learn's two bundled
    photographs (``load_sample_images()``: china.jpg, flower.jpg, 427x640,
    shipped with scikit-learn) and a random 64x64 crop position in it. The
    crop is resized to ``image_size`` (bilinear, antialiased when shrinking) and blended with
    the upsampled digit ``d`` (0..255) per channel as ``|patch - d|``: the
    stroke inverts the photo's colours under it. The draws do not depend on
    ``image_size`` or on any user seed, so ``digits_m`` is one fixed dataset
    (the same pixels at a given size every time, and the same scenes at
    every size); the ``seed`` of `kertransfer.data.load` only drives
    splits, shuffling and augmentation.

Measured on 32x32 images: raw-pixel logistic regression with 10 labels per
class scores about 91% on the rest of ``digits`` and about 34% on the rest of
``digits_m``.

Generated arrays are cached in-process per ``(name, image_size)`` as
read-only uint8 arrays (32x32: about 5 MB and well under a second to make).
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

__all__ = ["EMBEDDED_SOURCES", "embedded_arrays"]

EMBEDDED_SOURCES: dict[str, str] = {
    "digits": "scikit-learn's 1,797 real 8x8 handwritten digits, upsampled (10 classes)",
    "digits_m": "the same digits blended MNIST-M style with crops of scikit-learn's "
    "bundled photographs (10 classes)",
}

GENERATOR_SEED = 2015
CROP_SIZE = 64
_CHUNK = 256


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32) * (255.0 / 16.0)
    return images[..., np.newaxis], bunch.target.astype(np.int64)


def _upsample(images: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    out = tf.image.resize(images, image_size, method="bilinear").numpy()
    return np.clip(out, 0.0, 255.0)


def _blend_with_photos(digits: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    from sklearn.datasets import load_sample_images

    photos = np.stack(load_sample_images().images)  # uint8 [2, 427, 640, 3]
    n = len(digits)
    rng = np.random.default_rng(GENERATOR_SEED)
    which = rng.integers(0, len(photos), size=n)
    height, width = photos.shape[1:3]
    tops = rng.integers(0, height - CROP_SIZE + 1, size=n)
    lefts = rng.integers(0, width - CROP_SIZE + 1, size=n)
    out = np.empty((n, image_size[0], image_size[1], 3), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        patches = np.stack(
            [
                photos[p, t : t + CROP_SIZE, s : s + CROP_SIZE]
                for p, t, s in zip(which[start:stop], tops[start:stop], lefts[start:stop])
            ]
        ).astype(np.float32)
        if tuple(image_size) != (CROP_SIZE, CROP_SIZE):
            shrink = image_size[0] < CROP_SIZE or image_size[1] < CROP_SIZE
            patches = tf.image.resize(patches, image_size, method="bilinear", antialias=shrink)
            patches = patches.numpy()
        strokes = _upsample(digits[start:stop], image_size)
        out[start:stop] = np.round(np.clip(np.abs(patches - strokes), 0.0, 255.0))
    return out


@functools.lru_cache(maxsize=4)
def embedded_arrays(name: str, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Generate (or fetch from the in-process cache) an embedded dataset.

    Args:
        name: ``"digits"`` or ``"digits_m"``.
        image_size: ``(height, width)`` of the images.

    Returns:
        ``(x, y)``: read-only uint8 images ``[1797, height, width, 3]`` in
        0..255 and int64 labels ``[1797]`` in 0..9.

    Raises:
        KeyError: If ``name`` is not an embedded dataset (callers check first).
    """
    if name not in EMBEDDED_SOURCES:
        raise KeyError(name)
    digits, labels = _digits()
    if name == "digits":
        gray = np.round(_upsample(digits, image_size)).astype(np.uint8)
        images = np.repeat(gray, 3, axis=-1)
    else:
        images = _blend_with_photos(digits, image_size)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
