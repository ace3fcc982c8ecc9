"""Transfer-specific loss terms added to a model's training loss.

``with_regularizers(model, [L2SP(0.01, 0.01)])`` registers terms on a transfer
model (`kertransfer.build_transfer_model`, `add_head`'s two-head model of one):
every transfer model overrides Keras' public ``compute_loss`` and ``metrics``
(`kertransfer.models.transfer_model.TermsLoss`), so each training step adds
each registered term's value to the loss the model was compiled with. The
model stays the same object, so ``fit``, callbacks, staged unfreezing
(`kertransfer.callbacks`), `kertransfer.fine_tune` and saving all work
unchanged, under TensorFlow and JAX (Keras runs ``compute_loss`` in a scope
where variables read their current values, so the terms see the weights being
trained). Any other Keras model is wrapped in a `RegularizedModel` that calls
it, and ``with_regularizers`` returns that wrapper to train. Evaluation
reports the plain loss: the terms are added only in training. Each term's
value is also logged under its name (``l2sp``, ``ewc``, ``lwf``;
``val_l2sp`` on validation data, where it is measured but not added), so the
History and the run's learning curves show how much each term weighs against
the task loss. The terms are not saved with the model.

A new term is a small class::

    class L1ToStart(Term):
        name = "l1_to_start"

        def attach(self, model):             # once, when added: take snapshots
            self.start = snapshot(parameters(model.backbone))

        def __call__(self, model, x, y, y_pred):   # every training step
            return sum(ops.sum(ops.abs(v - self.start[v.path]))
                       for v in model.trainable_variables if v.path in self.start)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from kertransfer.errors import InvalidArgumentError, InvalidTypeError, format_message
from kertransfer.freezing.protocol import is_transfer_model
from kertransfer.models.transfer_model import TERMS_ATTR, LossTerms, TermsLoss, loss_terms
from kertransfer.validation import check_number


def parameters(layer) -> list:
    """The learnable variables of ``layer`` whether or not it is frozen now.

    BatchNorm moving statistics and other state created non-trainable are left
    out; a frozen layer's kernels and biases are in.
    """
    seen, out = set(), []
    layers = layer._flatten_layers() if hasattr(layer, "_flatten_layers") else [layer]
    for sub in layers:
        for v in getattr(sub, "_trainable_variables", []):
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def snapshot(variables) -> dict[str, keras.Variable]:
    """Copies (not references) of ``variables``' current values, keyed by path."""
    return {v.path: keras.Variable(ops.copy(v.value), trainable=False, dtype=v.dtype,
                                   name=f"start_{v.name}")
            for v in variables}


def _single(inputs):
    """A model's one input as a tensor (not a one-element list), else the list."""
    return inputs[0] if len(inputs) == 1 else inputs


def _backbone(model, who: str):
    if not is_transfer_model(model):
        raise InvalidTypeError(
            format_message(f"{who} needs to know which weights were pretrained.",
                           expected="a model from build_transfer_model (it has .backbone), or "
                                    "pretrained=[variables]",
                           received={"model": type(model).__name__})
        )
    return model.backbone


class Term:
    """A loss term added to a model's training loss by `with_regularizers`.

    Subclasses set ``name``, may override `attach` (called once when the term
    is added: take snapshots there) and implement ``__call__(model, x, y,
    y_pred)``, which returns a scalar built with ``keras.ops``.
    """

    name = "term"

    def attach(self, model) -> None:
        """Prepare for ``model`` (snapshots of its weights, say)."""

    def __call__(self, model, x, y, y_pred):
        raise NotImplementedError

    def value(self, model):
        """The term's current value outside training (for reports and tests)."""
        return float(ops.convert_to_numpy(self(model, None, None, None)))


class L2SP(Term):
    """L2-SP (Li, Grandvalet and Davoine, 2018): pull fine-tuned weights to their start.

    Adds ``alpha/2 * sum ||w - w0||^2`` over the pretrained weights (``w0``:
    their values when the term is attached) and ``beta/2 * sum ||w||^2`` over
    the new ones (the head). Only weights that are trainable at a step count
    at that step, so frozen blocks cost nothing.

    Args:
        alpha: Strength of the pull to the pretrained start point.
        beta: Weight decay of the new weights.
        pretrained: The pretrained variables (default: the model's backbone).
    """

    name = "l2sp"

    def __init__(self, alpha: float = 0.01, beta: float = 0.01, pretrained=None):
        self.alpha = check_number(alpha, "alpha", minimum=0,
                                  fix="L2SP's pull to the pretrained start point.")
        self.beta = check_number(beta, "beta", minimum=0,
                                 fix="L2SP's weight decay of the new weights.")
        self._pretrained = pretrained
        self.start: dict[str, keras.Variable] = {}

    def attach(self, model) -> None:
        pretrained = self._pretrained
        if pretrained is None:
            pretrained = parameters(_backbone(model, "L2SP"))
        self.start = snapshot(pretrained)

    def __call__(self, model, x, y, y_pred):
        near, new = 0.0, 0.0
        for v in model.trainable_variables:
            if v.path in self.start:
                near = near + ops.sum(ops.square(v - self.start[v.path]))
            else:
                new = new + ops.sum(ops.square(v))
        return 0.5 * self.alpha * near + 0.5 * self.beta * new


@keras.saving.register_keras_serializable(package="kertransfer")
class RegularizedModel(TermsLoss, keras.Model):
    """A Keras model that calls ``model`` and takes loss terms.

    `with_regularizers` returns one for a model that is not a transfer model.
    It holds no weights of its own: training it trains ``model``'s (``.wrapped``).
    It is compiled as ``model`` was (the same optimizer object), if ``model``
    was compiled. It saves and loads as a ``.keras`` file like other models,
    without its terms.

    Args:
        model: The Keras model to call.
        **kwargs: ``name`` and other ``keras.Model`` arguments.
    """

    def __init__(self, model: keras.Model, **kwargs):
        if not isinstance(model, keras.Model):
            raise InvalidTypeError(format_message(
                "RegularizedModel wraps a Keras model.", received={"model": type(model).__name__}))
        kwargs.setdefault("name", f"{model.name}_regularized")
        super().__init__(**kwargs)
        self.wrapped = model
        if getattr(model, "output_names", None):
            self.output_names = list(model.output_names)  # dict losses name the outputs
        if model.built:
            self.built = True
        if getattr(model, "compiled", False):
            _compile_like(self, model)

    def call(self, inputs, training=None):
        return self.wrapped(inputs, training=training)

    def get_config(self) -> dict:
        return {"name": self.name, "model": keras.saving.serialize_keras_object(self.wrapped)}

    def compile_from_config(self, config):
        # Compiled as saved: the wrapped model too, sharing the optimizer, whose
        # state the file holds under the wrapped model.
        if not getattr(self.wrapped, "compiled", False):
            self.wrapped.compile_from_config(config)
        if getattr(self.wrapped, "compiled", False):
            _compile_like(self, self.wrapped)
        else:
            super().compile_from_config(config)

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> RegularizedModel:
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(
            config["model"], custom_objects=custom_objects)
        return cls(**config)


def _compile_like(wrapper: RegularizedModel, model: keras.Model) -> None:
    """Compile ``wrapper`` as ``model`` is, with the same optimizer object."""
    config = dict(model.get_compile_config() or {})
    config.pop("optimizer", None)  # the same optimizer object, not a copy
    try:
        config = keras.saving.deserialize_keras_object(config)
    except Exception as e:  # a lambda loss, an unregistered custom object...
        raise InvalidArgumentError(format_message(
            "with_regularizers could not copy the model's compile settings to the "
            "model it returns.",
            fix="Call with_regularizers before compile() and compile the model it returns.",
            received={"model": model.name, "loss": getattr(model, "loss", None)})) from e
    wrapper.compile(optimizer=model.optimizer, **config)


def with_regularizers(model, terms: Sequence[Term]):
    """Add transfer-specific loss terms to ``model``'s training loss; return the model to train.

    A transfer model (`kertransfer.build_transfer_model`, `add_head`'s two-head
    model of one) takes the terms itself: the same object is returned, so
    ``with_regularizers(model, terms)`` alone is enough. Any other Keras model
    is wrapped first, so that the wrapper is what trains:
    ``reg = with_regularizers(RegularizedModel(model), terms)``; training
    ``reg`` trains ``model``'s weights. A plain model passed directly is
    refused, since training it afterwards would silently leave the terms out.

    Args:
        model: A Keras model (compiled or not; compile it before ``fit``).
        terms: `Term` objects, e.g. ``[L2SP(0.01, 0.01)]``. Each is attached
            now to ``model`` (snapshots are taken of the weights as they are).

    Returns:
        ``model``, whose training loss now has the terms. `regularizer_terms`
        lists its terms. Calling again on it adds more terms;
        `remove_regularizers` takes them all off.
    """
    if not isinstance(model, keras.Model):
        raise InvalidTypeError(
            format_message("with_regularizers needs a Keras model.",
                           received={"model": type(model).__name__}))
    terms = list(terms)
    bad = [t for t in terms if not isinstance(t, Term)]
    if bad or not terms:
        raise InvalidArgumentError(
            format_message("terms must be a non-empty list of kertransfer.methods terms.",
                           expected="e.g. [kt.methods.L2SP(alpha=0.01, beta=0.01)]",
                           received={"terms": bad or terms}))
    if not isinstance(model, TermsLoss):
        raise InvalidTypeError(format_message(
            "with_regularizers adds terms to a transfer model in place; a plain Keras model "
            "cannot take them, and training it would leave them out.",
            fix="Wrap it and train the wrapper: reg = kt.methods.with_regularizers("
                "kt.methods.RegularizedModel(model), terms); reg.fit(...).",
            received={"model": type(model).__name__}))
    for term in terms:
        term.attach(model)
    registry = loss_terms(model)
    if registry is None:
        registry = LossTerms()
        setattr(model, TERMS_ATTR, registry)
    taken = {m.name for m in model.metrics} | {"loss"}
    for term in terms:
        name, k = term.name, 2
        while name in taken:
            name, k = f"{term.name}_{k}", k + 1
        taken.add(name)
        # A Mean per term, listed by the model's metrics property: logged by fit
        # and evaluate, reset each epoch, carried as metric state under JAX, and
        # not saved with the model.
        registry.add(term, keras.metrics.Mean(name=name))
    _retrace(model)
    return model


def remove_regularizers(model):
    """Take every term off ``model``; return it."""
    if loss_terms(model) is not None:
        delattr(model, TERMS_ATTR)
        _retrace(model)
    return model


def regularizer_terms(model) -> list[Term]:
    """The terms `with_regularizers` added to ``model`` (a copy of the list)."""
    registry = loss_terms(model)
    return list(registry.terms) if registry is not None else []


def _retrace(model) -> None:
    """Drop compiled step functions so the next ``fit`` traces the new loss."""
    for attr in ("train_function", "test_function"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
