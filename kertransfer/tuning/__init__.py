"""KerasTuner search of the transfer knobs: `TransferHyperModel` and `tune`.

See the tuning guide in the docs for the space, the tuners, resuming and
distributed search.
"""

from kertransfer.tuning.features import SharedFeatures
from kertransfer.tuning.hypermodel import TransferHyperModel
from kertransfer.tuning.results import (
    TuneResult,
    format_results,
    plot_trials,
    results_table,
    write_results,
)
from kertransfer.tuning.search import tune
from kertransfer.tuning.space import KNOBS, Knob, parse_space
from kertransfer.tuning.tuners import TUNERS

__all__ = [
    "KNOBS",
    "Knob",
    "SharedFeatures",
    "TUNERS",
    "TransferHyperModel",
    "TuneResult",
    "format_results",
    "parse_space",
    "plot_trials",
    "results_table",
    "tune",
    "write_results",
]
