"""Argument types and the data flags the commands share."""

from __future__ import annotations

import argparse

_FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def _freeze_arg(text: str):
    """Parse --freeze: all, none, an int (blocks), a float (fraction) or a block name."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _weights_arg(text: str):
    return None if text.lower() in ("none", "random", "null") else text


def _size_arg(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a size like 32 or 224,224; received {text!r}"
        ) from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected a size like 32 or 224,224; received {text!r}")
    return (values[0], values[1])


def _add_data_args(p, augment: bool = True) -> None:
    """The data flags; ``augment=False`` for commands that do not train."""
    p.add_argument("--data", required=True,
                   help="digits, digits_m, tfds:NAME, or a folder of class subfolders")
    p.add_argument("--image-size", type=_size_arg, default=None,
                   help="image size, e.g. 32 or 224,224 (default: the backbone's default)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    p.add_argument("--validation-split", type=float, default=0.2,
                   help="fraction held out for validation (stratified)")
    p.add_argument("--test-split", type=float, default=0.0,
                   help="fraction held out for a final test (stratified)")
    p.add_argument("--samples-per-class", type=int, default=None,
                   help="keep this many training examples per class")
    if augment:
        p.add_argument("--augment", action="store_true",
                       help="flip/rotate/zoom/contrast in training")
    else:
        p.set_defaults(augment=False)
    p.add_argument("--seed", type=int, default=0, help="seed of splits, shuffling and init")


def _space_arg(text: str):
    """Parse one --space entry: knob=value, knob=low:high (a range) or knob=a,b,c (choices)."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(
            f"expected knob=value, knob=low:high or knob=a,b,c; received {text!r}")

    def scalar(v: str):
        for cast in (int, float):
            try:
                return cast(v)
            except ValueError:
                pass
        return {"none": None}.get(v.lower(), v)

    if ":" in value:
        parts = value.split(":")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected a range low:high; received {text!r}")
        return name, (scalar(parts[0]), scalar(parts[1]))
    if "," in value:
        return name, [scalar(v) for v in value.split(",") if v]
    return name, scalar(value)


def _class_names_arg(text: str) -> list[str]:
    """--class-names: a comma-separated list, or @FILE with one name per line."""
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                return [line.strip() for line in f if line.strip()]
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]!r}: {exc}") from None
    return [name.strip() for name in text.split(",")]
