"""Freeze policies, BatchNorm modes and the trainable summary."""

from kertransfer.freezing.apply import BN_MODES, apply_policy, block_context, freeze
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
    "apply_policy",
    "block_context",
    "freeze",
    "policy_from_config",
    "policy_to_config",
    "resolve_policy",
    "trainable_summary",
]
