"""TensorFlow image helpers shared by the data sources (graph-safe, tf.data-ready).

Every source ends with the same contract: one image is a float32 tensor
``[H, W, 3]`` of RGB values in ``0..255``.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["decode_file", "to_model_image", "to_rgb"]


def to_rgb(image: tf.Tensor) -> tf.Tensor:
    """Turn an image with 1 to 4 channels into 3 RGB channels.

    Grayscale (1 channel) and grayscale+alpha (2) are copied to 3 channels;
    RGBA (4) drops the alpha channel; RGB is returned unchanged. Works when
    the channel count is only known at run time (decoded files).

    Args:
        image: A tensor ``[H, W, C]`` with ``C`` in 1..4.

    Returns:
        A tensor ``[H, W, 3]`` of the same dtype.
    """
    channels = image.shape[-1]
    if channels == 3:
        return image
    if channels in (1, 2):
        return tf.image.grayscale_to_rgb(image[..., :1])
    if channels == 4:
        return image[..., :3]
    rgb = tf.cond(
        tf.shape(image)[-1] < 3,
        lambda: tf.image.grayscale_to_rgb(image[..., :1]),
        lambda: image[..., :3],
    )
    return tf.ensure_shape(rgb, [None, None, 3])


def to_model_image(image: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Convert to RGB float32 and resize (bilinear, antialiased) to ``image_size``.

    Args:
        image: A tensor ``[H, W, C]`` with ``C`` in 1..4, values in ``0..255``.
        image_size: Target ``(height, width)``.

    Returns:
        A float32 tensor ``[height, width, 3]`` with values in ``0..255``.
    """
    image = tf.cast(to_rgb(image), tf.float32)
    if tuple(image.shape[:2]) != tuple(image_size):
        image = tf.image.resize(image, image_size, method="bilinear", antialias=True)
        image = tf.clip_by_value(image, 0.0, 255.0)
    return tf.ensure_shape(image, [image_size[0], image_size[1], 3])


def decode_file(path: tf.Tensor) -> tf.Tensor:
    """Read and decode one image file (jpeg, png, bmp, gif: first frame).

    Args:
        path: A scalar string tensor.

    Returns:
        A uint8 tensor ``[H, W, C]`` with the file's own channel count (1 to 4).
    """
    image = tf.io.decode_image(
        tf.io.read_file(path), channels=0, dtype=tf.uint8, expand_animations=False
    )
    image.set_shape([None, None, None])
    return image
