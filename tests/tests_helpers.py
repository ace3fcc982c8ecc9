"""Helpers importable from tests (the tests folder is on sys.path under pytest)."""

from conftest import tiny_cnn


def tiny_cnn_ctor():
    return tiny_cnn
