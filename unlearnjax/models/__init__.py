"""Flax linen image classifiers behind a name registry."""

from unlearnjax.models.registry import (MODELS, PRETRAINED_LOADERS, get_model,
                                       init_variables, pretrained_variables)

__all__ = ['MODELS', 'PRETRAINED_LOADERS', 'get_model', 'init_variables',
           'pretrained_variables']
