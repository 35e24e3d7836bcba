"""The Flax rebuild of the fixtures' model reproduces the authors' forward pass
(the base of every equivalence test in `test_equiv_*.py`)."""

import jax
import numpy as np

import reference_fixtures as ref


def test_eval_logits_match_torch():
  model, variables, images, _, _, _ = ref.model_and_data()
  d = ref.load('model_and_data')
  with jax.default_matmul_precision('highest'):
    logits = model.apply(variables, images, train=False)
  np.testing.assert_allclose(logits, d['check/logits_eval'], rtol=1e-5,
                             atol=1e-4)


def test_train_mode_logits_and_running_stats_match_torch():
  model, variables, images, _, _, _ = ref.model_and_data()
  d = ref.load('model_and_data')
  with jax.default_matmul_precision('highest'):
    logits, updates = model.apply(variables, images, train=True,
                                  mutable=['batch_stats'])
  np.testing.assert_allclose(logits, d['check/logits_train'], rtol=1e-5,
                             atol=1e-4)
  np.testing.assert_allclose(
      updates['batch_stats']['bn1']['mean'],
      d['check/bn_after_one_train_forward/running_mean'], rtol=1e-5, atol=1e-6)
  # torch updates running_var with the unbiased batch variance, flax with the
  # biased one: they differ by 0.1·var_b/(n-1), n = 64·8·8 (README pitfalls).
  n = images.shape[0] * images.shape[1] * images.shape[2]
  np.testing.assert_allclose(
      updates['batch_stats']['bn1']['var'],
      d['check/bn_after_one_train_forward/running_var'], rtol=0,
      atol=1e-6 + 0.2 * float(np.max(d['check/bn_after_one_train_forward/running_var'])) / (n - 1))
