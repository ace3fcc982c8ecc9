"""Start-up: the command line parses before importing Keras; the package imports lazily."""

import os
import subprocess
import sys

import pytest

HEAVY = ("keras", "tensorflow", "jax", "keras_tuner", "sklearn", "matplotlib")


def _modules_after(code: str) -> set[str]:
    """The HEAVY modules a fresh interpreter holds after running ``code``."""
    probe = code + f"\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()
    return set(filter(None, out[-1].split(","))) if out else set()


@pytest.mark.backend_agnostic
def test_import_kertransfer_imports_nothing_heavy():
    assert _modules_after("import kertransfer") == set()


@pytest.mark.backend_agnostic
def test_help_parses_without_keras():
    code = ("from kertransfer.cli.main import main\n"
            "import contextlib, io\n"
            "for argv in (['--help'], ['train', '--help'], ['rank', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n"
            "            main(argv)\n"
            "        except SystemExit as e:\n"
            "            assert e.code == 0, e.code\n")
    assert _modules_after(code) == set()


def test_core_names_leave_keras_tuner_unimported():
    # One fresh process: the heavy modules after the core names, then after kt.tune.
    code = ("import kertransfer as kt\n"
            "kt.build_transfer_model, kt.fine_tune, kt.freeze, kt.data.load\n"
            f"import sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
            "kt.tune\n")
    out = subprocess.run([sys.executable, "-c", code + "print('keras_tuner' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.split()
    core = set(out[-2].split(","))
    assert "keras" in core and "keras_tuner" not in core
    assert out[-1] == "True"


@pytest.mark.backend_agnostic
def test_every_public_name_resolves_to_the_same_object_in_any_order():
    code = ("import importlib\nimport kertransfer as kt\n"
            "kt.freeze, kt.models\n"  # what loads first must not shadow a name
            "import pkgutil\n"
            "for m in pkgutil.walk_packages(kt.__path__, 'kertransfer.'):\n"
            "    if not m.name.endswith(('__main__', '_make_fashion_subset')):\n"
            "        importlib.import_module(m.name)\n"
            "for name in reversed(kt.__all__): getattr(kt, name)\n"
            "assert callable(kt.lint) and not isinstance(kt.lint, type(kt)), kt.lint\n"
            "assert kt.rank_backbones.__name__ == 'rank_backbones'\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_command_hides_backend_start_up_lines_unless_asked():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = [sys.executable, "-m", "kertransfer", "backbones", "--filter", "resnet50"]
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    assert "resnet50" in quiet.stdout
    assert "absl" not in quiet.stderr and "cuda" not in quiet.stderr.lower()
    loud = subprocess.run([*command[:3], "-v", *command[3:]], capture_output=True, text=True,
                          env=env, check=True)
    assert "resnet50" in loud.stdout
    assert "absl" in loud.stderr or "cuda" in loud.stderr.lower()


def test_serializables_lists_every_module_that_registers_a_class():
    import importlib
    import pkgutil

    import keras

    import kertransfer
    from kertransfer import _serializables

    for m in pkgutil.walk_packages(kertransfer.__path__, "kertransfer."):
        if not m.name.endswith(("__main__", "_make_fashion_subset")):
            importlib.import_module(m.name)
    modules = {obj.__module__ for name, obj in keras.saving.get_custom_objects().items()
               if name.startswith("kertransfer>")}
    assert modules and modules <= set(_serializables.MODULES)


@pytest.mark.parametrize("first", ["import keras\nimport kertransfer",
                                   "import kertransfer as kt\nkt.freeze\nimport keras"])
def test_a_fresh_process_loads_a_saved_transfer_model(first, tmp_path):
    import kertransfer as kt

    model = kt.build_transfer_model("mobilenet_v3_small", 3, input_shape=(32, 32, 3),
                                    weights=None)
    path = tmp_path / "m.keras"
    model.save(path)
    code = f"{first}\nm = keras.saving.load_model({str(path)!r})\nprint(type(m).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().endswith("TransferModel")
