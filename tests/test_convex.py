"""The convex solvers of Pawelczyk et al. §6, App. A.1.3, C (`unlearnjax.convex`)
against scikit-learn / NumPy references and their defining properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from unlearnjax import convex


def _tiny_classification(n=150, dim=5, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, classes, n)
  centres = rng.normal(0, 1.5, (classes, dim))
  features = centres[labels] + rng.normal(size=(n, dim))
  return features, labels


@pytest.mark.parametrize('masked', [False, True])
def test_logistic_solver_reaches_sklearn_optimum(masked):
  features, labels = _tiny_classification()
  n, l2, tol = len(labels), 1e-2, 1e-9
  weights = np.ones(n)
  if masked:  # S' ⊂ S by 0/1 weights, regulariser fixed by n_ref = |S|
    weights[::7] = 0.0
  with jax.enable_x64(True):
    params, grad_norm, iterations = convex.fit_logistic(
        jnp.asarray(features), jnp.asarray(labels), jnp.asarray(weights), l2,
        float(n), tol, num_classes=3, max_iter=500)
    assert params['w'].dtype == jnp.float64
    flat = np.asarray(convex.flat_parameters(params))
  assert float(grad_norm) < tol
  assert 0 < int(iterations) < 500
  # scikit-learn: C Σ w_i CE_i + ½‖W‖², the same optimum for C = 1/(l2 n).
  reference = LogisticRegression(C=1.0 / (l2 * n), tol=1e-12, max_iter=10000)
  reference.fit(features, labels, sample_weight=weights)
  np.testing.assert_allclose(np.asarray(params['w']), reference.coef_.T,
                             atol=2e-4, rtol=1e-3)
  b = np.asarray(params['b'])
  np.testing.assert_allclose(b - b.mean(),
                             reference.intercept_ - reference.intercept_.mean(),
                             atol=2e-4, rtol=1e-3)
  assert flat.shape == (5 * 3 + 3,)
  assert abs(flat[-3:].sum()) < 1e-12


def test_least_squares_desired_shift_matches_numpy_lstsq():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(80, 6))
  y = x @ rng.normal(size=6) + 0.1 * rng.normal(size=80)
  poison = np.zeros(80)
  poison[-10:] = 1.0
  x[-10:] += 3.0 * rng.normal(size=(10, 6))
  with jax.enable_x64(True):
    fit = lambda w, l2: np.asarray(convex.ridge_fit(  # pylint: disable=unnecessary-lambda-assignment
        jnp.asarray(x), jnp.asarray(y), jnp.asarray(w), l2, 80.0))
    delta = fit(1.0 - poison, 0.0) - fit(np.ones(80), 0.0)
    ridge = fit(np.ones(80), 0.5)
  clean = np.linalg.lstsq(x[:70], y[:70], rcond=None)[0]
  corr = np.linalg.lstsq(x, y, rcond=None)[0]
  np.testing.assert_allclose(delta, clean - corr, atol=1e-10)
  # Ridge: the augmented least-squares problem [X; √(l2 n) I] θ ≈ [y; 0].
  aug = np.vstack([x, np.sqrt(0.5 * 80) * np.eye(6)])
  np.testing.assert_allclose(
      ridge, np.linalg.lstsq(aug, np.concatenate([y, np.zeros(6)]),
                             rcond=None)[0], atol=1e-10)


def test_gradpc_ascends_inside_its_ball_and_gradient_canceling_cancels():
  """App. A.1.3: θ_low stays within ε_w of θ_clean and has a higher test
  loss; Gradient Canceling's Eq. 4 loss falls."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(200, 8))
  y = x @ rng.normal(size=8) + 0.1 * rng.normal(size=200)
  with jax.enable_x64(True):
    x, y = jnp.asarray(x), jnp.asarray(y)
    theta_clean = convex.ridge_fit(x, y, jnp.ones(200), 1e-2, 200.0)
    theta_low = convex.gradpc(jax.random.key(0), theta_clean, x, y,
                              radius=0.5, steps=50, lr=1.0)
    test_loss = lambda t: float(jnp.mean(jnp.square(x @ t - y)))  # pylint: disable=unnecessary-lambda-assignment
    clean_grad = x.T @ (x @ theta_low - y) / 200 + 1e-2 * theta_low
    _, start, end = convex.gradient_canceling(
        theta_low, clean_grad, x[:20], y[:20], lr=0.1, epochs=200)
    assert float(jnp.linalg.norm(theta_low - theta_clean)) <= 0.5 + 1e-12
    assert test_loss(theta_low) > test_loss(theta_clean) + 0.1
  assert float(end) < 0.25 * float(start)
