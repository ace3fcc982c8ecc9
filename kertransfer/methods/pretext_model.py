"""The pretext tasks inside a model: `PretextModel` and the pieces its tasks use.

`rotate_batch` (rotation), `nt_xent` and `simclr_augmentation` (SimCLR) and
the autoencoder's decoder, built from ``keras.ops`` and Keras layers so that
each task runs under TensorFlow and JAX; `PretextModel` puts a task's head
and loss on a feature extractor. `kertransfer.methods.pretext.pretrain`
trains it.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["PretextModel", "nt_xent", "rotate_batch", "simclr_augmentation"]


def rotate_batch(images):
    """Each image at 0, 90, 180 and 270 degrees (counter-clockwise), with labels 0-3.

    Returns:
        ``(rotated, labels)``: ``rotated[k * B + i]`` is image ``i`` turned
        ``k * 90`` degrees (``np.rot90(image, k)``), and ``labels[k * B + i]``
        is ``k``. The images must be square.
    """
    turned = [images]
    for _ in range(3):
        turned.append(ops.flip(ops.transpose(turned[-1], (0, 2, 1, 3)), axis=1))
    n = ops.shape(images)[0]
    labels = ops.repeat(ops.arange(4, dtype="int32"), n)
    return ops.concatenate(turned, axis=0), labels


def nt_xent(z1, z2, temperature: float = 0.5):
    """SimCLR's NT-Xent loss for positive pairs ``(z1[i], z2[i])``.

    The ``2N`` projections are L2-normalised; for each one the positive is
    its twin and the negatives are the other ``2N - 2``; the loss is the mean
    cross-entropy of ``cos / temperature`` over the ``2N`` anchors.
    """
    z = ops.concatenate([z1, z2], axis=0)
    z = z / ops.maximum(ops.norm(z, axis=1, keepdims=True), 1e-12)
    n2 = ops.shape(z)[0]
    n = n2 // 2
    sim = ops.matmul(z, ops.transpose(z)) / temperature
    sim = sim - 1e9 * ops.eye(n2, dtype=sim.dtype)  # an anchor is not its own negative
    positives = ops.concatenate([ops.arange(n, n2), ops.arange(0, n)])
    ce = keras.losses.sparse_categorical_crossentropy(positives, sim, from_logits=True)
    return ops.mean(ce)


def simclr_augmentation(image_size, seed: int | None = 0) -> keras.layers.Layer:
    """SimCLR's view-making augmentation for small images (crop/zoom, colour, blur).

    Random resized crops (zoom in up to 40% and shift), colour jitter,
    random grayscale and contrast, as in the paper's recipe, with the
    strengths scaled for 32-pixel images; a ``keras.layers.Pipeline`` that
    runs inside the model under every backend. Images stay in 0-255.
    """
    del image_size  # the layers adapt to any size
    layers = keras.layers
    return layers.Pipeline([
        layers.RandomZoom((-0.4, 0.0), fill_mode="reflect", seed=seed),
        layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=None if seed is None
                                 else seed + 1),
        layers.RandomColorJitter(value_range=(0, 255), brightness_factor=0.4,
                                 contrast_factor=0.4, saturation_factor=(0.2, 0.8),
                                 hue_factor=0.1, seed=None if seed is None else seed + 2),
        layers.RandomGrayscale(0.2, seed=None if seed is None else seed + 3),
    ], name="simclr_views")


def _decoder(image_shape, name="decoder") -> keras.Sequential:
    """Pooled features -> an image in [0, 1] of ``image_shape`` (upsampling convolutions)."""
    h, w, c = (int(v) for v in image_shape)
    h0, w0 = max(h // 8, 1), max(w // 8, 1)
    layers = keras.layers
    return keras.Sequential([
        layers.Dense(h0 * w0 * 64, activation="relu"),
        layers.Reshape((h0, w0, 64)),
        layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu"),
        layers.Resizing(h, w),
        layers.Conv2D(c, 3, padding="same", activation="sigmoid"),
    ], name=name)


class PretextModel(keras.Model):
    """A feature extractor trained through a pretext task's head and loss.

    Args:
        features: Images (0-255) -> pooled features (a model sharing the
            backbone's layers).
        task: One of `TASKS`.
        num_classes: Classes of the ``"supervised"`` task.
        augment: The view-making layer of ``"simclr"``.
        projection_dim: Output width of SimCLR's projection MLP.
        temperature: NT-Xent temperature.
    """

    def __init__(self, features, task: str, *, num_classes: int | None = None,
                 augment=None, projection_dim: int = 64, temperature: float = 0.5,
                 image_shape=None, **kwargs):
        super().__init__(name=f"{task}_pretext", **kwargs)
        self.features, self.task = features, task
        self.temperature = float(temperature)
        width = int(features.outputs[0].shape[-1])
        if task in ("supervised", "rotation"):
            units = 4 if task == "rotation" else int(num_classes)
            self.head = keras.layers.Dense(units, name=f"{task}_head")
            self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        elif task == "simclr":
            self.augment = augment
            self.projector = keras.Sequential([keras.layers.Dense(width, activation="relu"),
                                               keras.layers.Dense(int(projection_dim))],
                                              name="projection")
            self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
                name="pair_accuracy")
        else:
            self.decoder = _decoder(image_shape)
            self.accuracy_tracker = None

    def views(self, images, training=True):
        """Two augmented views of each image: ``(view1, view2)``."""
        return (self.augment(images, training=training),
                self.augment(images, training=training))

    def call(self, x, training=False):
        x = ops.cast(x, "float32")
        if self.task == "supervised":
            return {"logits": self.head(self.features(x, training=training))}
        if self.task == "rotation":
            turned, labels = rotate_batch(x)
            return {"logits": self.head(self.features(turned, training=training)),
                    "labels": labels}
        if self.task == "simclr":
            v1, v2 = self.views(x, training=True)
            z = self.projector(self.features(ops.concatenate([v1, v2], axis=0),
                                             training=training))
            return {"z": z}
        return {"reconstruction": self.decoder(self.features(x, training=training)),
                "target": x / 255.0}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.task in ("supervised", "rotation"):
            labels = y if self.task == "supervised" else y_pred["labels"]
            logits = ops.cast(y_pred["logits"], "float32")
            self.accuracy_tracker.update_state(labels, logits)
            return ops.mean(keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
        if self.task == "simclr":
            z = ops.cast(y_pred["z"], "float32")
            n = ops.shape(z)[0] // 2
            z1, z2 = z[:n], z[n:]
            # How often a view's nearest other view is its twin.
            zn = z / ops.maximum(ops.norm(z, axis=1, keepdims=True), 1e-12)
            sim = ops.matmul(zn, ops.transpose(zn)) - 2.0 * ops.eye(2 * n, dtype=z.dtype)
            twins = ops.concatenate([ops.arange(n, 2 * n), ops.arange(0, n)])
            self.accuracy_tracker.update_state(twins, sim)
            return nt_xent(z1, z2, self.temperature)
        rec = ops.cast(y_pred["reconstruction"], "float32")
        return ops.mean(ops.square(rec - ops.cast(y_pred["target"], "float32")))
