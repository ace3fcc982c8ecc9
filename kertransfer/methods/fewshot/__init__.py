"""Few-shot classification on a pretrained backbone's features.

The classifiers and `evaluate_episodes` are in ``classifiers.py``; episodic
meta-training, which evaluates with them, in ``episodic.py``.

With one to a few labelled images per class, fine-tuning overfits; a fixed
backbone and a simple classifier on its features do better:

- `PrototypeClassifier` (Snell, Swersky and Zemel, 2017): each class is the
  mean of its examples' L2-normalised features; an image goes to the nearest
  prototype (squared Euclidean distance; probabilities are a softmax of
  the negative distances).
- `LogisticClassifier` (Tian et al., 2020, "Rethinking few-shot image
  classification"): multinomial logistic regression on the L2-normalised
  features.

`meta_train` (``episodic.py``) meta-trains a backbone's
features on episodes of base classes, for these classifiers to use on new
ones.

`evaluate_episodes` scores either one on N-way K-shot episodes drawn from a
labelled set, with a 95% confidence interval; features are computed once
and reused by every episode.

The ``backbone`` argument is, in every function here: a model from
`kertransfer.build_transfer_model` (its pooled features, with its own
preprocessing), any ``keras.Model`` or callable from raw images to features
(outputs with more than two axes are averaged over the middle ones), or
``"pixels"`` (the flattened raw pixels scaled to [0, 1]: the baseline).

Images are any form kertransfer reads (`kertransfer.data.adapter`): numpy
images with ``labels=``, or labelled data that carries its labels (``(x, y)``
arrays, a ``tf.data.Dataset`` or ``keras.utils.PyDataset`` of ``(x, y)``
batches, a DataBundle or ArrayData); only the features are kept in memory.
"""

from kertransfer.methods.fewshot.classifiers import (
    EpisodeResult,
    LogisticClassifier,
    PrototypeClassifier,
    evaluate_episodes,
    extract_features,
)
from kertransfer.methods.fewshot.episodic import EpisodeLogits, MetaTrainResult, meta_train

__all__ = ["EpisodeLogits", "EpisodeResult", "LogisticClassifier", "MetaTrainResult",
           "PrototypeClassifier", "evaluate_episodes", "extract_features", "meta_train"]
