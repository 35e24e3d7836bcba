"""unlearnjax: corrective machine unlearning in JAX/Flax.

See README.md for the studies; SPEC.md (shared) for what each piece computes.
"""

__version__ = '0.1.0'
