"""Deployment: re-parameterization, export, quantization and benchmarking (heavy imports are lazy)."""

from ..models.reparam import Equivalence, reparameterize, verify_equivalence

__all__ = ["Equivalence", "reparameterize", "verify_equivalence"]
