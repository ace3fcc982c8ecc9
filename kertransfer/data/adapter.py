"""One data protocol: every public kertransfer function that takes data reads it this way.

This module is the protocol's documented home; its code lives in
`kertransfer.data.forms` (what form data is in, `form_of`, `Splits`),
`kertransfer.data.batches` (`as_batches`, `num_batches`, `iterate`),
`kertransfer.data.gathering` (`gather`, `as_arrays`, `split_arrays`,
`example_shape`) and `kertransfer.data.training_data` (`as_training_data`,
`as_validation_data`, `unaugmented_train`); kertransfer's own modules import
from those.

Accepted forms (what ``keras.Model.fit`` takes, plus kertransfer's own):

- numpy images ``x`` alone ``[N, ...]`` (or any array with ``shape`` and
  ``__array__``: a JAX or TensorFlow tensor), where only images are needed;
- ``(x, y)`` arrays (``y`` may be ``{task: labels}``);
- a ``tf.data.Dataset`` of batches: ``x`` or ``(x, y)`` (or ``(x, y, weights)``);
- a ``keras.utils.PyDataset`` of such batches;
- a `kertransfer.data.DataBundle` or `kertransfer.data.ArrayData` (one split,
  ``"train"`` by default);
- a list of batches (``[x0, x1, ...]`` or ``[(x0, y0), ...]``) or a generator
  of batches (one pass), as earlier versions took.

Anything else is refused with an `InvalidTypeError` (or a `DataError` when the
form is right and its content is not) whose message names the argument and
ends ``Received: name=...``.

Functions:

- `as_batches` for streaming passes (BatchNorm statistics, features, a
  learning-rate test, training): a ``tf.data.Dataset`` for TensorFlow inputs
  and bundles, else a ``keras.utils.PyDataset`` (a generator for a generator),
  which ``fit``/``predict`` take and a ``for`` loop iterates. Nothing is
  materialised.
- `gather` runs a function over every batch and concatenates its outputs with
  the labels, in one pass (features of any size of data).
- `as_arrays` for algorithms that need every row in memory; it materialises
  only arrays and in-memory data unless asked to (``streams=True``).
- `as_training_data` / `as_validation_data` for functions that need splits.

TensorFlow is imported only when the data is TensorFlow's (a dataset, a
bundle), so arrays, ``PyDataset`` and ``ArrayData`` work under every backend.
"""

from kertransfer.data.batches import as_batches
from kertransfer.data.gathering import as_arrays, gather, split_arrays
from kertransfer.data.training_data import as_training_data, as_validation_data

__all__ = ["as_arrays", "as_batches", "as_training_data", "as_validation_data", "gather",
           "split_arrays"]
