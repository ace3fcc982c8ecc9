"""Real ImageNet weights offline: converters from packages, checked, into the Keras cache.

- `install_weights` / `installed_weights` (``install.py``): the atomic,
  idempotent install into ``$KERAS_HOME/models`` and what it holds;
  ``kertransfer weights install|list`` call them.
- `CONVERTERS`: one converter per backbone name, ``convert(destination_dir, *,
  name, verbose) -> report``; ``mobilenet_v1.py`` converts MobileNet v1 from a
  frozen TF1 graph into Keras' own cache files.
- ``checks.py``: the parity checks every converter runs (top-1 on sample
  photos, outputs against the original).

See docs/offline-weights.md.
"""

from kertransfer.models.imagenet.install import (
    CONVERTERS,
    install_command,
    install_weights,
    installable,
    installed_weights,
)

__all__ = ["CONVERTERS", "install_command", "install_weights", "installable", "installed_weights"]
