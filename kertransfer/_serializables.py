"""The modules that register kertransfer's classes with Keras' serialization.

`keras.saving.load_model` finds a ``kertransfer>...`` class only once its
module ran. ``import kertransfer`` imports these modules at once when Keras is
already imported (the cost of Keras itself is paid then), and otherwise on the
first use of any top-level name; the command line imports them with Keras.
"""

import importlib

MODULES = (
    "kertransfer.backbones.sequence",
    "kertransfer.methods.adaptation",
    "kertransfer.methods.terms",
    "kertransfer.models.layers",
    "kertransfer.models.transfer_model",
    "kertransfer.training.discriminative",
    "kertransfer.training.optimizers",
    "kertransfer.training.schedules",
)


def register() -> None:
    """Import every module of `MODULES` (each registers its classes as it runs)."""
    for name in MODULES:
        importlib.import_module(name)
