"""Freeze policies, BatchNorm modes and the trainable summary."""

from kertransfer.freezing.apply import BN_MODES, apply_policy, freeze
from kertransfer.freezing.policies import (
    Compose,
    FreezeAll,
    FreezeBatchNorm,
    FreezeBlocks,
    FreezeFraction,
    FreezeNone,
    FreezePattern,
    FreezePolicy,
    FreezeThrough,
    policy_from_config,
    policy_to_config,
    resolve_policy,
)
from kertransfer.freezing.protocol import (
    TransferModelLike,
    block_context,
    is_transfer_model,
    require_transfer_model,
)
from kertransfer.freezing.summary import TrainableSummary, trainable_summary

__all__ = [
    "BN_MODES",
    "Compose",
    "FreezeAll",
    "FreezeBatchNorm",
    "FreezeBlocks",
    "FreezeFraction",
    "FreezeNone",
    "FreezePattern",
    "FreezePolicy",
    "FreezeThrough",
    "TrainableSummary",
    "TransferModelLike",
    "apply_policy",
    "block_context",
    "freeze",
    "is_transfer_model",
    "policy_from_config",
    "policy_to_config",
    "require_transfer_model",
    "resolve_policy",
    "trainable_summary",
]
