"""Lightweighting: structured and unstructured pruning, and the measured comparison of methods."""

from .prune import structured_prune, unstructured_prune, weight_sparsity

__all__ = ["structured_prune", "unstructured_prune", "weight_sparsity"]
