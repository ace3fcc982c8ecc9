"""Optimizers for transfer learning."""

from kertransfer.training.discriminative import DiscriminativeMixin, discriminative

__all__ = ["DiscriminativeMixin", "discriminative"]
