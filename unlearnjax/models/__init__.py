"""Flax linen image classifiers behind a name registry."""

from unlearnjax.models.registry import MODELS, get_model, init_variables

__all__ = ['MODELS', 'get_model', 'init_variables']
