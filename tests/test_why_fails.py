"""Why unlearning fails (Pawelczyk et al. §6, App. C): solvers, the planted
synthetic task, and the study end to end on its smoke config."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from unlearnjax.studies import why_fails

ROOT = os.path.join(os.path.dirname(__file__), '..')
_spec = importlib.util.spec_from_file_location(
    'why_fails_config',
    os.path.join(ROOT, 'experiments', 'configs', 'why_fails.py'))
why_fails_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(why_fails_config)


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
    params, grad_norm, iterations = why_fails.fit_logistic(
        jnp.asarray(features), jnp.asarray(labels), jnp.asarray(weights), l2,
        float(n), tol, num_classes=3, max_iter=500)
    assert params['w'].dtype == jnp.float64
    flat = np.asarray(why_fails.flat_parameters(params))
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
    fit = lambda w, l2: np.asarray(why_fails.ridge_fit(  # pylint: disable=unnecessary-lambda-assignment
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


def test_synthetic_data_follow_appendix_c2():
  with jax.enable_x64(True):
    w1, w2 = why_fails.planted_directions(jax.random.key(0), dim=40,
                                          signal_dim=8)
    x, y = why_fails.make_synthetic(jax.random.key(1), w1, w2, n=4000, dim=40,
                                    signal_dim=8, low_std=1e-2, noise_std=0.1)
  w1, w2, x, y = map(np.asarray, (w1, w2, x, y))
  np.testing.assert_allclose([w1 @ w1, w2 @ w2, w1 @ w2], [1, 1, 0], atol=1e-12)
  assert not np.any(w1[8:]) and not np.any(w2[8:])
  np.testing.assert_allclose(x[:, :8].std(0), 1.0, rtol=0.1)
  np.testing.assert_allclose(x[:, 8:].std(0), 1e-2, rtol=0.1)
  np.testing.assert_allclose(np.std(y[:2000] - x[:2000] @ w1), 0.1, rtol=0.1)
  np.testing.assert_allclose(np.std(y[2000:] - x[2000:] @ w2), 0.1, rtol=0.1)


def test_clean_gradients_are_orthogonal_to_the_planted_poison_shift():
  """App. C.2's construction in the limit it approximates: clean inputs span
  only the first k coordinates, so every clean gradient lies in that span
  and has zero cosine with the part of the desired shift the poisons put
  outside it, which gradient descent on clean data therefore never
  removes."""
  dim, k, n, p = 30, 5, 400, 40
  with jax.enable_x64(True):
    w1, w2 = why_fails.planted_directions(jax.random.key(0), dim=dim,
                                          signal_dim=k)
    x, y = why_fails.make_synthetic(jax.random.key(1), w1, w2, n=n, dim=dim,
                                    signal_dim=k, low_std=0.0, noise_std=0.1)
    x_poison = x[:p] + jax.random.normal(jax.random.key(2), (p, dim)) * (
        jnp.arange(dim) >= k)
    x_corr = jnp.concatenate([x, x_poison])
    y_corr = jnp.concatenate([y, y[:p] + 1.0])
    retain = jnp.concatenate([jnp.ones(n), jnp.zeros(p)])
    theta_corr = why_fails.ridge_fit(x_corr, y_corr, jnp.ones(n + p), 0.0,
                                     n + p)
    target = why_fails.ridge_fit(x_corr, y_corr, retain, 0.0, n + p)
    v = theta_corr - target
    v_perp = v * (jnp.arange(dim) >= k)
    assert float(jnp.linalg.norm(v_perp)) > 0.1 * float(jnp.linalg.norm(v))
    assert float(jnp.abs(target[k:]).max()) < 1e-10   # min-norm clean fit
    _, stats = why_fails.clean_gradient_descent(
        jax.random.key(3), theta_corr, target, v_perp, x, y, 0.0,
        float(n + p), lr=0.5, steps=200, batch_size=n, signal_dim=k)
    _, minibatch = why_fails.clean_gradient_descent(
        jax.random.key(4), theta_corr, target, v_perp, x, y, 0.0,
        float(n + p), lr=0.1, steps=50, batch_size=32, signal_dim=k)
    perp_norm = float(jnp.linalg.norm(v_perp))
  stats, minibatch = jax.device_get((stats, minibatch))
  for run in (stats, minibatch):
    assert np.max(np.abs(run['cos_minibatch'])) < 1e-10
    assert np.max(np.abs(run['cos_full'])) < 1e-10
    np.testing.assert_allclose(run['dist_low'], perp_norm, rtol=1e-10)
  # The orthogonal part of the distance never moves; (full-batch) descent
  # removes the rest.
  in_span_start = np.sqrt(stats['dist_l2'][0]**2 - stats['dist_low'][0]**2)
  in_span_end = np.sqrt(max(stats['dist_l2'][-1]**2
                            - stats['dist_low'][-1]**2, 0.0))
  assert in_span_end < 1e-3 * in_span_start


def _smoke_config():
  config = why_fails_config.get_config('smoke')
  config.recipe.steps = 20
  config.max_train = 300
  config.model_shift.num_poisons = 12
  config.gradient_alignment.update(dict(n=600, dim=60, signal_dim=6,
                                        num_poisons=60, n_test=100))
  config.gradient_alignment.gd.steps = 20
  return config


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('why_fails'))
  return workdir, why_fails.run(_smoke_config(), workdir)


def test_smoke_study_writes_rows_and_figures(study):
  workdir, rows = study
  shift = [r for r in rows if r['part'] == 'model_shift']
  align = [r for r in rows if r['part'] == 'gradient_alignment']
  assert len(shift) == 2 * 2 and len(align) == 2   # (poison, β); forget sets
  assert {r['poison'] for r in shift} == {'badnet', 'gaussian'}
  for r in shift:
    assert r['grad_norm_max'] < r['tol']
    assert r['n_removed'] == round(r['beta'] * r['n_poisons'])
    for field in ('shift_poison_l1', 'shift_poison_l2', 'shift_random_l1',
                  'shift_random_l2'):
      assert r[field] > 0, field
  for r in align:
    assert len(r['curves']['cos_minibatch']) == 20
    assert len(r['red_curves']['dist_l2']) == 20
    assert r['shift_l1'] >= 0.99 * r['poison_shift_l1']   # equalised ℓ1
  report = why_fails.write_report(rows, workdir)
  for name in ('model_shift.png', 'model_shift.md', 'gradient_alignment.png',
               'gradient_alignment.md', 'report.md'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  assert report == os.path.join(workdir, 'report.md')
  with open(os.path.join(workdir, 'results.jsonl')) as f:
    lines = f.read().splitlines()
  assert len(lines) == len(rows)
  assert all(json.loads(line)['run_key'] for line in lines)


def test_rerun_skips_finished_rows(study, monkeypatch):
  workdir, rows = study

  def no_work(*args, **kwargs):
    raise AssertionError('a finished row was redone')

  for name in ('trained_model', 'fit_logistic', 'gradient_canceling',
               'clean_gradient_descent'):
    monkeypatch.setattr(why_fails, name, no_work)
  again = why_fails.run(_smoke_config(), workdir)
  assert sorted(r['run_key'] for r in again) == sorted(
      r['run_key'] for r in rows)
