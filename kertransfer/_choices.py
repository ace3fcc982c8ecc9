"""The names of the choices kertransfer's functions accept, importable without Keras.

Each tuple is the one list its module checks arguments against; the command
line builds its parser from them, so ``kertransfer --help`` starts without
importing Keras or its backend.
"""

#: Unsupervised domain adaptation methods of `kertransfer.methods.adapt`.
ADAPTATION_METHODS = ("adabn", "dann", "coral")
#: Pretraining tasks of `kertransfer.pretrain`.
PRETEXT_TASKS = ("supervised", "rotation", "simclr", "autoencoder")
#: Transferability scores of `kertransfer.rank_backbones`, in their table's order.
RANKING_METRICS = ("logme", "leep", "hscore")
#: Formats of `kertransfer.export`.
EXPORT_FORMATS = ("saved_model", "tflite", "onnx", "keras")
#: Demos of ``kertransfer demo``.
DEMO_TASKS = ("fashion", "digits")
