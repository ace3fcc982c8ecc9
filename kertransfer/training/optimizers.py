"""Optimizers for transfer learning: one factory, a step count per variable, in-place rebuilds.

**The factory.** `make_optimizer` is the one place a name (``"adam"``,
``"adamw"``, ``"sgd"``) or a Keras optimizer instance becomes the optimizer a
kertransfer function trains with.

**A step count per variable.** Keras optimizers keep one ``iterations``
count, and Adam's bias correction uses it for every variable. A variable that
starts training at step *t* (a block unfrozen mid-run) has zero moments but
the bias correction of step *t*: its first updates come out 2 to 5 times the
learning rate instead of about the rate (DESIGN trap 9). PyTorch keeps a step
count per parameter. `with_step_counts` gives any Keras optimizer class the
same: one scalar count per variable, used wherever the optimizer's update
reads ``self.iterations`` (Adam, AdamW, Adamax, Lamb, Adafactor and every
subclass, discriminative ones included), while learning-rate schedules keep
reading the global count. For a variable that trains from the first step, its
count equals ``iterations``, so nothing changes for ordinary training.

**In-place rebuilds.** Keras builds an optimizer on a fixed list of variables
(under JAX it must be exactly the list that trains), and recompiling loses its
state. When the trainable set changes inside a run, `rebuild_optimizer`
rebuilds the model's optimizer *in place*: the object the user compiled with
stays ``model.optimizer``; the iteration count, the learning rate, the moments
and step counts of variables that were training are kept; variables that
start training get zero moments and a step count of 0, as a fresh optimizer
would give them. A mixed-precision ``LossScaleOptimizer`` keeps its loss scale,
and its inner optimizer is the one rebuilt.
"""

from __future__ import annotations

from typing import Any

import keras

from kertransfer.errors import InvalidArgumentError, InvalidTypeError, format_message
from kertransfer.freezing.compiled import record_step_variables

OPTIMIZERS = {
    "adam": lambda lr: keras.optimizers.Adam(lr),
    "adamw": lambda lr: keras.optimizers.AdamW(lr),
    "sgd": lambda lr: keras.optimizers.SGD(lr, momentum=0.9),
}


def check_optimizer(optimizer: Any, argument: str = "optimizer") -> Any:
    """Validate an optimizer argument: a known name or a Keras optimizer instance."""
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        if optimizer.lower() not in OPTIMIZERS:
            raise InvalidArgumentError(format_message(
                "Unknown optimizer name.",
                expected=f"one of {sorted(OPTIMIZERS)}, or a keras.optimizers.Optimizer",
                received={argument: optimizer}))
        return optimizer.lower()
    raise InvalidTypeError(format_message(
        "An optimizer is given by name or as a Keras optimizer instance.",
        expected=f"one of {sorted(OPTIMIZERS)}, or e.g. keras.optimizers.AdamW(1e-3)",
        received={argument: optimizer}))


def _is_schedule(lr) -> bool:
    return isinstance(lr, keras.optimizers.schedules.LearningRateSchedule)


def make_optimizer(optimizer: Any, learning_rate: Any = None, *, copy: bool = False,
                   argument: str = "optimizer") -> keras.optimizers.Optimizer:
    """The optimizer a kertransfer function trains with.

    Args:
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9), or a
            Keras optimizer instance (any class, discriminative ones included).
        learning_rate: The rate (a float or a schedule). A name needs one
            (default 1e-3). An instance keeps its other settings (betas,
            weight decay, clipping, ...) and gets this rate, unless it is None
            or the instance has a schedule.
        copy: Return a new, unbuilt optimizer of the instance's class and
            configuration instead of the instance itself (a Keras optimizer
            trains one set of variables: a second model needs its own).
        argument: The argument's name for error messages.

    Returns:
        A Keras optimizer.

    Raises:
        InvalidArgumentError: An unknown name.
        InvalidTypeError: Neither a name nor an optimizer.
    """
    optimizer = check_optimizer(optimizer, argument)
    if isinstance(optimizer, str):
        return OPTIMIZERS[optimizer](1e-3 if learning_rate is None else learning_rate)
    if copy:
        optimizer = type(optimizer).from_config(optimizer.get_config())
    if learning_rate is not None and not _is_schedule(_base(optimizer)._learning_rate):
        if _is_schedule(learning_rate):
            if optimizer.built:
                raise InvalidArgumentError(format_message(
                    "A built optimizer's float learning rate cannot become a schedule.",
                    fix="Pass an unbuilt optimizer, or a float learning rate.",
                    received={argument: type(optimizer).__name__}))
            config = optimizer.get_config()
            config["learning_rate"] = learning_rate
            return type(optimizer).from_config(config)
        optimizer.learning_rate = float(learning_rate)
    return optimizer


def _base(optimizer):
    """The optimizer that holds the moments (a loss-scale wrapper's inner one)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


# -- step counts per variable ------------------------------------------------

class StepCountMixin:
    """One step count per variable, read by the update wherever it reads ``iterations``."""

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        steps = []
        strategy = getattr(self, "_distribution_strategy", None)  # TensorFlow's optimizer
        for v in variables:
            def make(v=v):
                return self.add_variable(shape=(), initializer="zeros", dtype="int",
                                         aggregation="only_first_replica",
                                         name=f"{v.path.replace('/', '_')}_step")
            if strategy is not None:
                with strategy.extended.colocate_vars_with(getattr(v, "value", v)):
                    steps.append(make())
            else:
                steps.append(make())
        self._kt_steps = steps

    @property
    def iterations(self):
        step = self.__dict__.get("_kt_step_now")
        return super().iterations if step is None else step

    def step_of(self, variable):
        """The step-count variable of a model variable the optimizer was built with."""
        return self._kt_steps[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        step = self.step_of(variable)
        # Written to __dict__: the optimizer's attribute tracking must not see it.
        self.__dict__["_kt_step_now"] = step
        try:
            super().update_step(gradient, variable, learning_rate)
        finally:
            self.__dict__["_kt_step_now"] = None
        self.assign_add(step, keras.ops.ones((), step.dtype))


_STEP_CLASSES: dict[type, type] = {}


def with_step_counts(cls: type) -> type:
    """``cls`` with a step count per variable (see `StepCountMixin`); itself if it has one."""
    if issubclass(cls, StepCountMixin):
        return cls
    if cls in _STEP_CLASSES:
        return _STEP_CLASSES[cls]
    new = type(f"StepCounted{cls.__name__}", (StepCountMixin, cls),
               {"__module__": __name__,
                "__doc__": f"`{cls.__name__}` with a step count per variable (see "
                           "`kertransfer.training.optimizers`)."})
    new = keras.saving.register_keras_serializable(package="kertransfer")(new)
    _STEP_CLASSES[cls] = new
    return new


# -- rebuilding in place -----------------------------------------------------

def _by_name(variables) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in variables:
        out.setdefault(v.name, v)
    return out


def copy_optimizer_state(source, target, built_on=None) -> int:
    """Copy every state variable of ``source`` that ``target`` has too (by name and shape).

    Both must be built (``source`` may be unbuilt: nothing is copied). Step
    counts ``target`` has and ``source`` lacks are set to ``source``'s
    iteration count for the variables ``source`` trained (``built_on``,
    default all it was built with), so their bias correction goes on as
    before. Returns the number of variables copied.
    """
    source, target = _base(source), _base(target)
    if not getattr(source, "built", False):
        return 0
    old = _by_name(source.variables)
    copied = 0
    for v in target.variables:
        src = old.get(v.name)
        if src is not None and tuple(src.shape) == tuple(v.shape):
            v.assign(src.value if hasattr(src, "value") else src)
            copied += 1
    if isinstance(target, StepCountMixin) and not isinstance(source, StepCountMixin):
        trained = {v.path for v in (built_on if built_on is not None
                                    else source._trainable_variables)}
        count = keras.ops.convert_to_numpy(source.iterations)
        for v in target._trainable_variables:
            if v.path in trained:
                target.step_of(v).assign(count)
    return copied


def _transplant(target, fresh) -> None:
    """Make ``target`` the optimizer ``fresh`` is, keeping ``target``'s identity."""
    target.__dict__.clear()
    target.__dict__.update(fresh.__dict__)
    target.__class__ = fresh.__class__


def _bind(optimizer, model) -> None:
    bind = getattr(optimizer, "bind_model", None)  # discriminative optimizers know the blocks
    if callable(bind) and model is not None:
        bind(model)


def _rebuilt(opt, variables, model):
    """A built copy of ``opt`` (step counts added) on ``variables``, with ``opt``'s state."""
    fresh = with_step_counts(type(opt)).from_config(opt.get_config())
    _bind(fresh, model)
    fresh.build(variables)
    copy_optimizer_state(opt, fresh)
    return fresh


def build_optimizer(optimizer, variables, model=None) -> keras.optimizers.Optimizer:
    """Build ``optimizer`` on ``variables`` in place, with a step count per variable.

    An unbuilt optimizer gets its step counts before it is built. A built one
    on another set is rebuilt in place: the object stays the same, the
    iteration count, the learning rate, and the moments and step counts of
    variables it trained are kept; the others start fresh. ``model`` binds a
    discriminative optimizer to its blocks. Returns ``optimizer``.
    """
    variables = list(variables)
    inner = _base(optimizer)
    if not optimizer.built:
        if not isinstance(inner, StepCountMixin):
            inner.__class__ = with_step_counts(type(inner))
            inner._kt_steps = []
        _bind(inner, model)
        optimizer.build(variables)
        return optimizer
    same = ([id(v) for v in inner._trainable_variables] == [id(v) for v in variables])
    if same and isinstance(inner, StepCountMixin):
        return optimizer
    _transplant(inner, _rebuilt(inner, variables, model))
    if inner is not optimizer:
        # A loss-scale wrapper keeps its scale; its list of variables follows the inner
        # one's. Written to __dict__, as Keras' build does with tracking off: the wrapper
        # must not track the model's variables as its own.
        optimizer.__dict__["_trainable_variables"] = variables[:]
        optimizer.__dict__["_trainable_variables_indices"] = {
            optimizer._var_key(v): i for i, v in enumerate(variables)}
    return optimizer


def rebuild_optimizer(model, trainable_variables=None) -> keras.optimizers.Optimizer:
    """Rebuild ``model.optimizer`` in place on its trainable set now, state kept.

    Args:
        model: A compiled Keras model.
        trainable_variables: The variables to build on (default: the model's
            trainable variables now).

    Returns:
        ``model.optimizer`` (the same object the model was compiled with).
    """
    variables = list(model.trainable_variables if trainable_variables is None
                     else trainable_variables)
    build_optimizer(model.optimizer, variables, model)
    record_step_variables(model, variables)  # the new trainable set is compiled in now
    return model.optimizer


# Keras' optimizers, with step-counted versions registered at import so that a model
# saved after a rebuild loads in a new process (`kertransfer.training.discriminative`
# registers its classes' versions too). A custom optimizer class: call
# ``with_step_counts(MyOptimizer)`` before loading such a model.
KERAS_OPTIMIZERS = tuple(
    getattr(keras.optimizers, name) for name in (
        "Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adamax", "Nadam", "Lion", "Adadelta",
        "Ftrl", "Lamb", "Adafactor", "Muon") if hasattr(keras.optimizers, name))
for _cls in KERAS_OPTIMIZERS:
    with_step_counts(_cls)
