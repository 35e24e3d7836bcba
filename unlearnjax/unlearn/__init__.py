"""Unlearning methods: `get_method(name).unlearn(task, hparams, key)`."""

from unlearnjax.unlearn.base import Method, UnlearnTask
from unlearnjax.unlearn.registry import METHODS, get_method

__all__ = ['Method', 'UnlearnTask', 'METHODS', 'get_method']
