"""Transfer lint: the classic fine-tuning bugs, found on a model before training.

``kt.lint(model, sample_batch=None, num_examples=None)`` checks a model from
`kertransfer.build_transfer_model` (or any Keras model, where a rule
applies) and returns a `LintReport`; each finding names the rule, what is
wrong, where, and the fix. The rules:

``bn-training-in-frozen-block``
    A BatchNorm layer is trainable inside a block whose other layers are
    frozen: it runs in training mode, normalising with each batch's
    statistics and moving its averages, so the "frozen" features drift.
``preprocessing-twice`` / ``preprocessing-missing``
    The sample batch is already scaled (values within [-1, 1] or [0, 1])
    and the model scales it again; or the model has no preprocessing and
    the batch is raw 0..255 pixels.
``trainable-changed-after-compile``
    Layers were frozen or unfrozen after ``compile``: the compiled train
    step and the optimizer still hold the old trainable set.
``backbone-lr-above-head``
    A discriminative optimizer gives some backbone layer a higher learning
    rate than the head.
``backbone-not-pretrained``
    The model was built with pretrained weights (``"imagenet"`` or a file),
    or ``expect_pretrained=True``, but every BatchNorm layer of the
    backbone still has its initial statistics: the backbone never saw data.
``head-too-large``
    The head has more than 100 trainable parameters per training example.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from kertransfer.freezing.compiled import step_variables
from kertransfer.freezing.protocol import block_context, is_transfer_model
from kertransfer.validation import check_int

__all__ = ["Finding", "LintReport", "RULES", "lint"]

RULES = ("bn-training-in-frozen-block", "preprocessing-twice", "preprocessing-missing",
         "trainable-changed-after-compile", "backbone-lr-above-head",
         "backbone-not-pretrained", "head-too-large")


@dataclasses.dataclass
class Finding:
    """One problem: ``rule``, what is wrong, where, and how to fix it."""

    rule: str
    message: str
    fix: str
    where: str = ""

    def __str__(self) -> str:
        where = f" ({self.where})" if self.where else ""
        return f"[{self.rule}]{where} {self.message}\n    fix: {self.fix}"


@dataclasses.dataclass
class LintReport:
    """What `lint` returns: the findings and the rules that ran."""

    findings: list[Finding]
    checked: list[str]
    skipped: dict[str, str]

    @property
    def ok(self) -> bool:
        """No finding."""
        return not self.findings

    def rules(self) -> list[str]:
        """The rules that found something."""
        return [f.rule for f in self.findings]

    def __str__(self) -> str:
        head = (f"{len(self.findings)} finding(s)" if self.findings else "no findings") + \
            f" ({len(self.checked)} rules checked"
        head += f", {len(self.skipped)} skipped)" if self.skipped else ")"
        lines = [head, *[str(f) for f in self.findings]]
        lines += [f"  skipped {rule}: {why}" for rule, why in self.skipped.items()]
        return "\n".join(lines)


def _is_batchnorm(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def _bn_in_frozen_blocks(model) -> list[Finding]:
    ctx = block_context(model)
    by_block: dict[int, list] = {}
    for layer, block in zip(ctx.layers, ctx.block_of):
        by_block.setdefault(block, []).append(layer)
    found = []
    for block, layers in by_block.items():
        weighted = [lay for lay in layers if lay.weights and not _is_batchnorm(lay)]
        frozen = weighted and not any(lay.trainable for lay in weighted)
        loose = [lay.name for lay in layers if _is_batchnorm(lay) and lay.trainable]
        if frozen and loose and model.backbone.trainable:
            found.append(Finding(
                "bn-training-in-frozen-block",
                f"{len(loose)} BatchNorm layer(s) train in a frozen block: they normalise "
                "with batch statistics and move their averages, so the frozen features drift.",
                "kt.freeze(model, ..., bn='frozen') (BatchNorm in inference mode), or unfreeze "
                "the block.", f"block {ctx.block_names[block]!r}: {', '.join(loose[:3])}"))
    return found


def _preprocessing(model, batch: np.ndarray) -> list[Finding]:
    low, high = float(np.min(batch)), float(np.max(batch))
    scaled = high <= 1.5 and low >= -1.5
    prep = next((lay for lay in model.layers if type(lay).__name__ == "Preprocess"), None)
    if prep is not None and prep.mode != "none" and scaled:
        return [Finding(
            "preprocessing-twice",
            f"The sample batch is already scaled (values {low:.2f} to {high:.2f}) and the "
            f"model scales it again ({prep.mode!r} preprocessing expects raw 0..255 pixels).",
            "Feed raw 0..255 images (kertransfer.data.load gives them), or drop your own "
            "rescaling.", f"layer {prep.name!r}")]
    rescales = (keras.layers.Rescaling, keras.layers.Normalization)
    inner = list(model.layers) + list(getattr(getattr(model, "backbone", None), "layers", []))
    has_scaling = prep is not None or any(isinstance(lay, rescales) for lay in inner)
    if not has_scaling and high > 2.0:
        return [Finding(
            "preprocessing-missing",
            f"The sample batch holds raw values up to {high:.0f} and the model has no "
            "preprocessing or rescaling layer.",
            "Build it with kertransfer.build_transfer_model (it adds the backbone's own "
            "preprocessing), or add keras.layers.Rescaling(1 / 255).")]
    return []


def _changed_after_compile(model) -> list[Finding]:
    snapshot = step_variables(model)
    current = [v.path for v in model.trainable_variables]
    optimizer = getattr(model, "optimizer", None)
    if snapshot is None and optimizer is not None and getattr(optimizer, "built", False):
        snapshot = [v.path for v in getattr(optimizer, "_trainable_variables", [])]
    if snapshot is None or sorted(snapshot) == sorted(current):
        return []
    added, removed = set(current) - set(snapshot), set(snapshot) - set(current)
    return [Finding(
        "trainable-changed-after-compile",
        f"The trainable set changed after compile ({len(added)} variable(s) unfrozen, "
        f"{len(removed)} frozen); the compiled step and optimizer still use the old set.",
        "Freeze with kt.freeze(model, ...), which recompiles, or call compile again.",
        ", ".join(sorted(added | removed)[:3]))]


def _lr_order(model) -> list[Finding]:
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    table = getattr(optimizer, "_kt_by_path", None)  # a discriminative optimizer's rates
    if not table or not is_transfer_model(model):
        return []
    backbone_paths = {v.path for v in model.backbone.trainable_variables}
    rates = {v.path: table.get(v.path, 1.0) for v in model.trainable_variables}
    head = [r for p, r in rates.items() if p not in backbone_paths]
    body = {p: r for p, r in rates.items() if p in backbone_paths}
    if not head or not body:
        return []
    fastest = max(body, key=body.get)
    if body[fastest] > min(head):
        return [Finding(
            "backbone-lr-above-head",
            f"A backbone variable trains at x{body[fastest]:g} the base rate, faster than "
            f"the head (x{min(head):g}): the pretrained features move more than the new head.",
            "Give lower blocks lower rates: discriminative(opt, decay=2.6), or multipliers "
            "that rise towards the head.", fastest)]
    return []


def _bn_untouched(model) -> bool | None:
    """True when every backbone BatchNorm has its initial statistics; None without any."""
    layers = [lay for lay in getattr(model.backbone, "layers", []) if _is_batchnorm(lay)]
    if not layers:
        return None
    for lay in layers:
        mean = np.asarray(lay.moving_mean)
        var = np.asarray(lay.moving_variance)
        if not (np.allclose(mean, 0.0) and np.allclose(var, 1.0)):
            return False
    return True


def _claims_pretrained(model, expect_pretrained) -> bool:
    if expect_pretrained is not None:
        return bool(expect_pretrained)
    report = getattr(model, "weights_report", None)
    source = str(getattr(report, "source", "") or "")
    return bool(source) and source.lower() not in ("none", "random")


def _head_params(model) -> int:
    backbone = getattr(model, "backbone", None)
    skip = {id(v) for v in backbone.weights} if backbone is not None else set()
    return int(sum(np.prod(v.shape) for v in model.trainable_variables if id(v) not in skip))


def lint(model, sample_batch: Any = None, *, num_examples: int | None = None,
         expect_pretrained: bool | None = None) -> LintReport:
    """Check a transfer model for the classic fine-tuning bugs (see the module notes).

    Args:
        model: A model from `kertransfer.build_transfer_model` (or loaded from
            its file). Rules about blocks and the backbone need one.
        sample_batch: Images as they will be fed (enables the preprocessing rules).
        num_examples: Training examples (enables ``head-too-large``).
        expect_pretrained: Say whether the backbone should be pretrained; by
            default, what the model was built with (its ``weights_report``).

    Returns:
        A `LintReport`; ``report.ok`` is True when nothing was found.
    """
    num_examples = check_int(num_examples, "num_examples", minimum=0, allow_none=True)
    findings: list[Finding] = []
    checked: list[str] = []
    skipped: dict[str, str] = {}
    transfer = is_transfer_model(model)
    if transfer:
        findings += _bn_in_frozen_blocks(model)
        checked.append("bn-training-in-frozen-block")
    else:
        skipped["bn-training-in-frozen-block"] = "not a transfer model (no backbone)"
    if sample_batch is not None:
        batch = sample_batch[0] if isinstance(sample_batch, tuple) else sample_batch
        findings += _preprocessing(model, np.asarray(batch, dtype="float32"))
        checked += ["preprocessing-twice", "preprocessing-missing"]
    else:
        skipped["preprocessing"] = "no sample_batch"
    findings += _changed_after_compile(model)
    checked.append("trainable-changed-after-compile")
    findings += _lr_order(model)
    checked.append("backbone-lr-above-head")
    if transfer and _claims_pretrained(model, expect_pretrained):
        untouched = _bn_untouched(model)
        if untouched is None:
            skipped["backbone-not-pretrained"] = "the backbone has no BatchNorm statistics"
        else:
            checked.append("backbone-not-pretrained")
            if untouched:
                source = getattr(getattr(model, "weights_report", None), "source", None)
                findings.append(Finding(
                    "backbone-not-pretrained",
                    "Every BatchNorm layer of the backbone still has its initial statistics "
                    "(mean 0, variance 1): the backbone was never trained, though it is "
                    "meant to be pretrained" + (f" ({source})" if source else "") + ".",
                    "Check the weights file loads (model.weights_report lists what matched), "
                    "or build with weights=None and train it as a scratch model."))
    else:
        skipped["backbone-not-pretrained"] = "not meant to be pretrained"
    if num_examples is not None:
        checked.append("head-too-large")
        params = _head_params(model)
        if params > 100 * num_examples:
            findings.append(Finding(
                "head-too-large",
                f"The head has {params:,} trainable parameters for {num_examples:,} "
                f"training examples ({params / max(num_examples, 1):.0f} per example): "
                "it can memorise them.",
                "Use a smaller head (head_units=() is one dense layer), more dropout, or "
                "more examples."))
    else:
        skipped["head-too-large"] = "no num_examples"
    return LintReport(findings, checked, skipped)
