"""Shared test fixtures: quiet TensorFlow, seeds, a tiny backbone, slow-test opt-in."""

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Each worker (and its child processes) runs TensorFlow's ops on one thread: the workers
    # fill the cores already, and small ops cost less without a thread pool's hand-offs.
    for _name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_name, "1")
if os.environ.get("KERAS_BACKEND") == "jax" and \
        "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    # The tests' models are tiny and each runs a few steps: XLA's compile time is what counts,
    # and its unoptimised CPU code compiles faster (the JAX run: 2m11 -> 1m38).
    os.environ["XLA_FLAGS"] = \
        (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
if os.environ.get("KERAS_BACKEND") == "jax" and \
        "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # Two CPU devices, for the data-parallel test (test_data_parallel.py); others use one.
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=2"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow")


# Modules whose tests take longest (child processes, searches, the demo), first:
# with two workers, a long test that starts last keeps one worker busy alone.
LONG_FIRST = ("test_doc_examples.py", "test_tuning_resume.py", "test_unfreezing_resume.py",
              "test_demo.py", "test_tuning.py", "test_multitask.py", "test_export.py",
              "test_cli.py", "test_sequence_backbones.py", "test_pretrain.py", "test_methods.py")


def _long_first(item) -> int:
    name = item.path.name
    return LONG_FIRST.index(name) if name in LONG_FIRST else len(LONG_FIRST)


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    """Under JAX, XLA compilations are cached on disk for the run: the tests build many small
    models whose train steps compile to the same programs, and a compiled program is reused
    by every later test (the other worker's and child processes' too) instead of compiled
    again. The cache lives in the run's pytest temporary folder (shared by the workers),
    which pytest prunes."""
    if keras.backend.backend() != "jax":
        return
    import jax

    base = config._tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    settings = {"jax_compilation_cache_dir": str(shared / "xla-cache"),
                "jax_persistent_cache_min_compile_time_secs": 0,
                "jax_persistent_cache_min_entry_size_bytes": 0}
    for name, value in settings.items():
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value)  # the tests' child processes share it


def pytest_collection_modifyitems(config, items):
    items.sort(key=_long_first)  # stable: the order within a module is kept
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session(free_memory=False)  # the collection comes after the test


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """After each test, with its fixtures released: collect its garbage, then freeze what
    survives. TensorFlow keeps the graph of every function traced in a process, so the heap
    grows test after test; frozen, it is no longer walked by each collection (a walk cost
    up to 1 s per test late in a run, and slowed every automatic collection within tests).
    Frozen objects are still freed when nothing refers to them; only a cycle among them
    (a module-scoped fixture's model after its module) outlives its use."""
    yield
    gc.collect()
    gc.freeze()


def tiny_cnn(include_top=False, weights=None, input_shape=(16, 16, 3)):
    """A three-block CNN with BatchNorm: fast to build and to trace."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="block1_conv")(x)
    x = keras.layers.BatchNormalization(name="block1_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="block2_conv")(x)
    x = keras.layers.BatchNormalization(name="block2_bn")(x)
    x = keras.layers.ReLU()(x)
    return keras.Model(inputs, x, name="tiny_cnn")


TINY_BLOCKS = (("stem", r"^stem_"), ("block1", r"^block1_"), ("block2", r"^block2_"))


@pytest.fixture(scope="session")
def tiny_backbone_name():
    """Register the tiny CNN as ``tiny_test`` and return its name."""
    import kertransfer as kt

    kt.register_backbone("tiny_test", tiny_cnn, blocks=TINY_BLOCKS, preprocessing="tf",
                         default_size=16, min_size=8, has_imagenet=False, overwrite=True)
    return "tiny_test"


def tiny_arrays(n: int = 200):
    """``n`` random 16x16 RGB images (0..255) in 4 classes, with a learnable signal."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    x = rng.uniform(0, 255, (n, 16, 16, 3)).astype("float32")
    for c in range(4):
        x[y == c, : 4 * (c + 1) // 2, :, c % 3] = 255.0
    return x, y.astype("int32")


@pytest.fixture
def tiny_data():
    """200 random 16x16 RGB images (0..255) in 4 classes, with a learnable signal."""
    return tiny_arrays(200)


@pytest.fixture
def tiny_folder(tmp_path_factory, tiny_data):
    """The first 96 images of ``tiny_data`` as PNG files, one subfolder per class."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("pngs")
    x, y = tiny_data
    for i, (image, label) in enumerate(zip(x[:96], y[:96])):
        cls = root / f"class{label}"
        cls.mkdir(exist_ok=True)
        (cls / f"{i:03d}.png").write_bytes(tf.io.encode_png(image.astype("uint8")).numpy())
    return root


# -- real ImageNet weights, offline ---------------------------------------------------------

def offline(monkeypatch):
    """No download can happen through Keras' file utilities."""
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise OSError("URL fetch failure: this test has no network")

    monkeypatch.setattr(file_utils, "urlretrieve", no_network)


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """MobileNet v1 installed into a fresh KERAS_HOME: (home, the install report)."""
    import json

    from kertransfer.models.imagenet import install

    home = tmp_path_factory.mktemp("keras_home")
    report = install.install_weights("mobilenet", cache_dir=home / "models", verbose=1)
    for name, check in report["checks"].items():  # the measured parity, in the test log
        print(name, json.dumps(check))
    return home, report


@pytest.fixture
def keras_home(installed, monkeypatch):
    """KERAS_HOME points at the installed cache, and no download can happen."""
    home, _ = installed
    monkeypatch.setenv("KERAS_HOME", str(home))
    offline(monkeypatch)
    return home
