"""Nox sessions for kertransfer.

    nox                 # the default sessions: tests, lint
    nox -l              # list every session
    nox -s tests -- tests/test_docs.py -x     # arguments after -- go to pytest
    nox -s tests_jax    # the backend-agnostic tests under KERAS_BACKEND=jax
    nox -s docs         # regenerate the backbone table and build the site (--strict)
    nox -s examples | demo | bench

Each session installs the project into its own virtualenv (uv when it is
installed, else virtualenv); add ``-r`` to reuse the virtualenvs between runs.
"""

from __future__ import annotations

import os
import pathlib
import sys

import nox

ROOT = pathlib.Path(__file__).resolve().parent
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"  # the interpreter running nox
LINT_PATHS = ("kertransfer", "tests", "benchmarks", "examples", "docs", "noxfile.py")

nox.options.sessions = ["tests", "lint"]
nox.options.default_venv_backend = "uv|virtualenv"


def _env(**extra: str) -> dict[str, str]:
    """Environment for commands: quiet TensorFlow C++ logs unless the caller chose a level."""
    env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    env.update(extra)
    return env


def _scripts(folder: str) -> list[str]:
    """The runnable scripts of ``folder``: ``*.py``, except helpers named ``_*.py``."""
    paths = (ROOT / folder).glob("*.py")
    return sorted(str(p.relative_to(ROOT)) for p in paths if not p.name.startswith("_"))


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite on 2 workers (the README's command)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-n", "2", *session.posargs, env=_env())


@nox.session(python=PYTHON)
def tests_jax(session: nox.Session) -> None:
    """Run the tests marked backend_agnostic under KERAS_BACKEND=jax."""
    session.install("-e", ".[test]")
    session.run("pytest", "-n", "2", "-m", "backend_agnostic", *session.posargs,
                env=_env(KERAS_BACKEND="jax"))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check (formatting is not enforced)."""
    session.install("ruff>=0.6")
    paths = [p for p in LINT_PATHS if (ROOT / p).exists()]
    session.run("ruff", "check", *paths, *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Regenerate the backbone table in docs/backbones.md and build the site strictly.

    Arguments after ``--`` go to ``mkdocs build``, e.g. ``-- -d /tmp/site``.
    """
    session.install("-e", ".[docs]", "ruff")  # ruff formats the API signatures
    session.run("python", "docs/gen_backbones.py", env=_env())
    session.run("python", "docs/gen_cli.py", env=_env())
    session.run("mkdocs", "build", "--strict", *session.posargs,
                env=_env(NO_MKDOCS_2_WARNING="1"))


@nox.session(python=PYTHON)
def examples(session: nox.Session) -> None:
    """Run every examples/*.py script."""
    scripts = _scripts("examples")
    if not scripts:
        session.error("No examples to run: examples/*.py matched no file")
    session.install(".")
    for script in scripts:
        session.run("python", script, *session.posargs, env=_env())


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Run the offline demo into runs/demo (extra arguments go to `kertransfer demo`)."""
    session.install(".[offline-weights]")
    session.run("kertransfer", "demo", "--out", "runs/demo", *session.posargs, env=_env())


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run every benchmarks/*.py script; each appends a row to docs/benchmarks.md.

    Arguments after ``--`` go to each script (e.g. ``-- --no-record``).
    """
    scripts = _scripts("benchmarks")
    if not scripts:
        session.error("No benchmarks to run: benchmarks/*.py matched no file")
    session.install(".")
    for script in scripts:
        session.run("python", script, *session.posargs, env=_env())
