"""The diagonal Fisher information of a classifier, and EWC built on it.

``fisher_diagonal(model, images)`` follows Kirkpatrick et al. (2017): for each
image ``x`` a label ``y`` is *sampled* from the model's own prediction
``p(y|x)``, and the squared gradient of ``log p(y|x)`` with respect to each
weight is averaged over the images. That is the Fisher, not the "empirical
Fisher" of the true labels, and not the squared gradient of a summed
log-softmax (which is a different quantity). Gradients are per example:
``jax.vmap(jax.grad(...))`` under JAX, a per-example gradient tape under
TensorFlow.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from kertransfer.data.batches import as_batches, iterate
from kertransfer.errors import InvalidArgumentError, InvalidTypeError, format_message
from kertransfer.freezing.protocol import is_transfer_model
from kertransfer.methods.terms import Term, parameters, snapshot
from kertransfer.validation import check_int, check_number


def _images(data, samples: int | None) -> np.ndarray:
    """The first ``samples`` images of ``data``, in any form `kertransfer.data.adapter` reads."""
    chunks, count = [], 0
    for xb in iterate(as_batches(data, "data", images_only=True)):
        xb = np.asarray(xb, dtype="float32")
        chunks.append(xb)
        count += len(xb)
        if samples is not None and count >= samples:
            break
    if not chunks:
        raise InvalidArgumentError(
            format_message("The data yielded no images.", expected="a non-empty dataset",
                           received={"data": type(data).__name__}))
    x = np.concatenate(chunks)
    return x[:samples] if samples is not None else x


def _pick(outputs, output):
    if isinstance(outputs, dict):
        if output is None:
            if len(outputs) != 1:
                raise InvalidArgumentError(
                    format_message("The model has several heads: say which one the Fisher "
                                   "is of.", expected=f"output= one of {sorted(outputs)}",
                                   received={"output": output}))
            return next(iter(outputs.values()))
        return outputs[output]
    if isinstance(outputs, (list, tuple)):
        return outputs[0 if output is None else int(output)]
    return outputs


def _log_probs(model, outputs, output):
    """Log-probabilities of the chosen head, whether it ends in softmax or logits."""
    y = _pick(outputs, output)
    activation = getattr(model, "activation", "softmax")
    if isinstance(activation, dict):
        activation = activation.get(output, "softmax")
    if activation == "logits":
        return ops.log_softmax(y, axis=-1)
    if activation == "sigmoid":
        raise InvalidArgumentError(
            format_message("The Fisher here is of a categorical output (softmax or logits).",
                           received={"activation": activation}))
    return ops.log(ops.clip(y, 1e-12, 1.0))


def _sq_grads_tf(model, variables, x, labels, output, batch_size):
    import tensorflow as tf

    tf_vars = [v.value for v in variables]

    @tf.function(reduce_retracing=True)
    def batch_sum(xb, yb):
        def one(args):
            xi, yi = args
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(tf_vars)
                lp = _log_probs(model, model(xi[None], training=False), output)[0, yi]
            grads = tape.gradient(lp, tf_vars)
            return [tf.square(g) if g is not None else tf.zeros_like(v)
                    for g, v in zip(grads, tf_vars)]

        spec = [tf.TensorSpec(v.shape, v.dtype) for v in tf_vars]
        squares = tf.map_fn(one, (xb, yb), fn_output_signature=spec)
        return [tf.reduce_sum(s, axis=0) for s in squares]

    total = [np.zeros(v.shape, "float64") for v in variables]
    for i in range(0, len(x), batch_size):
        sums = batch_sum(tf.constant(x[i:i + batch_size]), tf.constant(labels[i:i + batch_size]))
        for t, s in zip(total, sums):
            t += s.numpy()
    return total


def _sq_grads_jax(model, variables, x, labels, output, batch_size):
    import jax
    import jax.numpy as jnp

    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]
    where = {}
    for i, v in enumerate(model.trainable_variables):
        where[id(v)] = (0, i)
    for i, v in enumerate(model.non_trainable_variables):
        where[id(v)] = (1, i)
    missing = [v.path for v in variables if id(v) not in where]
    if missing:
        raise InvalidArgumentError(
            format_message("Some variables are not the model's.", received={"variables":
                                                                              missing}))
    spots = [where[id(v)] for v in variables]

    def logp(tv, ntv, xi, yi):
        out, _ = model.stateless_call(tv, ntv, xi[None], training=False)
        return _log_probs(model, out, output)[0, yi]

    grad = jax.vmap(jax.grad(logp, argnums=(0, 1)), in_axes=(None, None, 0, 0))

    @jax.jit
    def batch_sum(tv, ntv, xb, yb):
        g = grad(tv, ntv, xb, yb)
        return [jnp.sum(jnp.square(g[k][i]), axis=0) for k, i in spots]

    total = [np.zeros(v.shape, "float64") for v in variables]
    for i in range(0, len(x), batch_size):
        sums = batch_sum(trainable, frozen, jnp.asarray(x[i:i + batch_size]),
                         jnp.asarray(labels[i:i + batch_size]))
        for t, s in zip(total, sums):
            t += np.asarray(s)
    return total


def fisher_diagonal(model, data, *, variables=None, output=None, samples: int | None = 512,
                    labels=None, seed: int = 0, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Diagonal Fisher information of ``model`` at its current weights.

    Args:
        model: A classifier ending in softmax (or logits).
        data: Images: an array, ``(x, y)`` arrays (the labels are not used),
            a `kertransfer.data.DataBundle` (its training split) or a dataset.
        variables: The weights to compute it for (default: every learnable
            weight of the model, frozen or not).
        output: The head, for a model with several.
        samples: How many images to use (default 512; None: all).
        labels: Labels to differentiate at instead of sampling them (gives the
            empirical Fisher with the true labels); default: one label per
            image sampled from the model's prediction.
        seed: Seed of the label sampling.
        batch_size: Images per vectorized gradient computation.

    Returns:
        ``{variable path: array of the variable's shape}``, the mean over
        images of the squared per-example gradients of ``log p(y|x)``.
    """
    import keras

    if not isinstance(model, keras.Model):
        raise InvalidTypeError(format_message("fisher_diagonal needs a Keras model.",
                                              received={"model": type(model).__name__}))
    samples = check_int(samples, "samples", minimum=1, allow_none=True)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    x = _images(data, samples)
    variables = list(variables) if variables is not None else parameters(model)
    if labels is None:
        chunks = [np.exp(np.asarray(ops.convert_to_numpy(_log_probs(
            model, model(x[i:i + 256], training=False), output)), "float64"))
            for i in range(0, len(x), 256)]
        probs = np.concatenate(chunks)
        probs /= probs.sum(axis=1, keepdims=True)
        rng = np.random.default_rng(seed)
        labels = np.array([rng.choice(probs.shape[1], p=p) for p in probs], dtype="int32")
    labels = np.asarray(labels, dtype="int32")
    if labels.shape != (len(x),):
        raise InvalidArgumentError(
            format_message("labels must hold one class per image.",
                           expected=f"shape ({len(x)},)", received={"labels.shape":
                                                                     labels.shape}))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        total = _sq_grads_tf(model, variables, x, labels, output, batch_size)
    elif backend == "jax":
        total = _sq_grads_jax(model, variables, x, labels, output, batch_size)
    else:
        raise InvalidArgumentError(
            format_message("fisher_diagonal runs under the TensorFlow or JAX backend.",
                           received={"backend": backend}))
    return {v.path: (t / len(x)).astype("float32") for v, t in zip(variables, total)}


class EWC(Term):
    """Elastic weight consolidation (Kirkpatrick et al., 2017).

    Adds ``lam/2 * sum_i F_i (theta_i - theta*_i)^2``, where ``theta*`` are the
    weights when the term is attached (the source solution; copies, not
    references to the live variables) and ``F`` their diagonal Fisher
    information on the source data (`fisher_diagonal`: labels sampled from the
    model's own predictions).

    Args:
        lam: Strength of the penalty.
        data: Source images for the Fisher (not needed when ``fisher`` is
            given).
        fisher: A precomputed ``{path: array}`` Fisher.
        variables: The weights to protect (default: the backbone's learnable
            weights, or all the model's when it has no backbone).
        output: The source head, for a model with several.
        samples: Images used for the Fisher.
        seed: Seed of the label sampling.
    """

    name = "ewc"

    def __init__(self, lam: float = 100.0, data=None, *, fisher=None, variables=None,
                 output=None, samples: int | None = 512, seed: int = 0):
        lam = check_number(lam, "lam", minimum=0, fix="EWC's strength of the pull.")
        samples = check_int(samples, "samples", minimum=1, allow_none=True)
        if data is None and fisher is None:
            raise InvalidArgumentError(
                format_message("EWC needs the source data to compute the Fisher (or a "
                               "precomputed fisher=).", received={"data": None}))
        self.lam = lam
        self.data, self.fisher = data, fisher
        self._variables, self.output, self.samples, self.seed = variables, output, samples, seed
        self.star: dict = {}
        self.weights: dict = {}

    def attach(self, model) -> None:
        import keras

        variables = self._variables
        if variables is None:
            variables = parameters(model.backbone if is_transfer_model(model) else model)
        fisher = self.fisher
        if fisher is None:
            fisher = fisher_diagonal(model, self.data, variables=variables, output=self.output,
                                     samples=self.samples, seed=self.seed)
        self.fisher = fisher
        self.star = snapshot(v for v in variables if v.path in fisher)
        self.weights = {p: keras.Variable(np.asarray(f), trainable=False, dtype="float32",
                                          name="fisher")
                        for p, f in fisher.items() if p in self.star}
        self.data = None  # the images are not needed any more

    def __call__(self, model, x, y, y_pred):
        total = 0.0
        for v in model.trainable_variables:
            if v.path in self.star:
                total = total + ops.sum(self.weights[v.path] * ops.square(v - self.star[v.path]))
        return 0.5 * self.lam * total
