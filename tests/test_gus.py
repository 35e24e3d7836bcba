"""Gaussian poisoning and the Gaussian Unlearning Score (Pawelczyk Alg. 3-4)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from unlearnjax import grads, training
from unlearnjax.manipulations import MANIPULATIONS, gaussian
from unlearnjax.metrics import gus


@pytest.fixture(scope='module')
def poisons(digits):
  train, _, test = digits
  return gaussian.manipulate(train, test, seed=0, poison_fraction=0.1)


@pytest.fixture(scope='module')
def clean_model(digits, tiny_model):
  """Trained on the clean digits: independent of every stored ξ (the null)."""
  train, _, _ = digits
  recipe = training.Recipe(steps=40, batch_size=64, learning_rate=0.05)
  return training.fit(tiny_model, recipe, train, jax.random.key(1))


def _loop_unit_grads(model, variables, images, labels):
  loss = grads.example_cross_entropy(model, variables['batch_stats'])
  grad_x = jax.jit(jax.grad(loss, argnums=1))  # one sample at a time
  out = []
  for x, y in zip(images, labels):
    g = np.asarray(grad_x(variables['params'], x, y))
    out.append(g / np.linalg.norm(g))
  return np.stack(out)


# --- the manipulation ------------------------------------------------------


def test_gaussian_poisons_exactly_p_rows(digits, poisons):
  train, _, test = digits
  m = poisons
  p = int(round(0.1 * len(train)))
  assert m.manipulated.size == p == m.info['num_poisons']
  changed = np.flatnonzero((m.train.images != train.images).any(axis=(1, 2, 3)))
  np.testing.assert_array_equal(changed, m.manipulated)
  np.testing.assert_array_equal(m.train.labels, train.labels)
  np.testing.assert_array_equal(m.manipulated_clean_labels,
                                train.labels[m.manipulated])
  np.testing.assert_array_equal(m.base_images, train.images[m.manipulated])
  assert m.noise.shape == (p, *train.image_shape)
  np.testing.assert_array_equal(m.train.images[m.manipulated] - m.base_images,
                                m.noise)
  # Not clipped: the poisoned pixels leave the [0, 1] data range.
  assert m.train.images.min() < 0 and m.train.images.max() > 1
  # The Gaussian poison targets no test input.
  np.testing.assert_array_equal(m.affected.images, test.images)
  np.testing.assert_array_equal(m.unaffected.labels, test.labels)
  assert 'gaussian' in MANIPULATIONS


def test_gaussian_noise_scale_and_seed(digits, poisons):
  train, _, test = digits
  m = poisons
  pixel_std = float(np.std(train.images, dtype=np.float64))
  assert m.noise_std == pytest.approx(math.sqrt(0.32) * pixel_std)
  assert m.info['noise_std_fraction'] == pytest.approx(math.sqrt(0.32))
  assert np.std(m.noise) == pytest.approx(m.noise_std, rel=0.03)
  assert abs(np.mean(m.noise)) < 0.03 * m.noise_std
  again = gaussian.manipulate(train, test, seed=0, poison_fraction=0.1)
  np.testing.assert_array_equal(again.noise, m.noise)
  other = gaussian.manipulate(train, test, seed=1, poison_fraction=0.1)
  assert not np.array_equal(other.manipulated, m.manipulated)
  absolute = gaussian.manipulate(train, test, seed=0, num_poisons=9,
                                 noise_std=0.5)
  assert absolute.manipulated.size == 9 and absolute.noise_std == 0.5
  assert absolute.info['noise_std_fraction'] == pytest.approx(0.5 / pixel_std)


def test_gaussian_bad_arguments(digits, poisons):
  train, _, test = digits
  with pytest.raises(ValueError, match='poisons'):
    gaussian.manipulate(train, test, seed=0, poison_fraction=0.0)
  with pytest.raises(ValueError, match='poisons'):
    gaussian.manipulate(train, test, seed=0, num_poisons=len(train) + 1)
  with pytest.raises(ValueError, match='noise_std'):
    gaussian.manipulate(train, test, seed=0, noise_std=-1.0)
  with pytest.raises(ValueError, match='noise_std_fraction'):
    gaussian.manipulate(train, test, seed=0, noise_std_fraction=0.0)
  with pytest.raises(ValueError, match='noise has shape'):
    gaussian.GaussianPoisoning(
        train=poisons.train, manipulated=poisons.manipulated,
        manipulated_clean_labels=poisons.manipulated_clean_labels,
        affected=test, unaffected=test, info={},
        noise=poisons.noise[:-1], base_images=poisons.base_images)


# --- I_z and GUS -------------------------------------------------------------


def test_scores_equal_the_loop(poisons, clean_model, tiny_model):
  """13 rows in chunks of 8 (padded) on 4 devices == jax.grad per sample."""
  m, rows = poisons, slice(0, 13)
  images, labels = m.base_images[rows], m.manipulated_clean_labels[rows]
  unit = _loop_unit_grads(tiny_model, clean_model, images, labels)
  expected = np.sum((unit * m.noise[rows]).reshape(13, -1), 1) / m.noise_std
  scores = gus.input_gradient_scores(tiny_model, clean_model, images, labels,
                                     m.noise[rows], m.noise_std, chunk_size=8)
  np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
  # ξ = ε·(unit gradient): every I_z is exactly 1.
  ones = gus.input_gradient_scores(tiny_model, clean_model, images, labels,
                                   m.noise_std * unit, m.noise_std,
                                   chunk_size=8)
  np.testing.assert_allclose(ones, 1.0, rtol=1e-4)


def test_gus_null_on_a_model_without_the_poisons(poisons, clean_model,
                                                 tiny_model):
  m = poisons
  p = m.manipulated.size
  scores = gus.manipulation_scores(tiny_model, clean_model, m)
  assert scores.shape == (p,)
  assert abs(gus.gus(scores)) < 4 / math.sqrt(p)
  assert abs(gus.gus_z(scores)) < 4
  fresh = gus.fresh_noise_scores(tiny_model, clean_model, m.base_images,
                                 m.manipulated_clean_labels, m.noise_std,
                                 0, draws=10)
  assert fresh.shape == (10, p)
  assert abs(fresh.mean()) < 4 / math.sqrt(fresh.size)
  assert 0.9 < fresh.std() < 1.1
  # The fresh draws do not depend on the chunking.
  again = gus.fresh_noise_scores(tiny_model, clean_model, m.base_images,
                                 m.manipulated_clean_labels, m.noise_std,
                                 jax.random.key(0), draws=10, chunk_size=32)
  np.testing.assert_allclose(again, fresh, rtol=1e-4, atol=1e-5)
  # No dependence: the |I| test is at chance.
  assert gus.tpr_at_fpr(scores, fresh, 0.01) < 0.08
  assert gus.tpr_at_fpr(scores, fresh, 0.2) < 0.35


def test_zero_input_gradient_gives_nan(poisons, clean_model, tiny_model):
  """All-zero weights: ∇ₓℓ = 0, I undefined (NaN), GUS refuses."""
  m = poisons
  zero = {'params': jax.tree.map(np.zeros_like, clean_model['params']),
          'batch_stats': clean_model['batch_stats']}
  scores = gus.manipulation_scores(tiny_model, zero, m)
  assert np.isnan(scores).all()
  with pytest.raises(ValueError, match='no finite score'):
    gus.gus(scores)


def test_planted_dependence_is_detected(poisons, clean_model, tiny_model):
  """ξ_z = ε·(5·unit gradient + z), z ~ N(0, I): I_z ~ N(5, 1)."""
  m = poisons
  p = m.manipulated.size
  unit = _loop_unit_grads(tiny_model, clean_model, m.base_images,
                          m.manipulated_clean_labels)
  planted = m.noise_std * 5.0 * unit + m.noise
  scores = gus.input_gradient_scores(tiny_model, clean_model, m.base_images,
                                     m.manipulated_clean_labels, planted,
                                     m.noise_std)
  assert gus.gus(scores) > 4.0 > 4 / math.sqrt(p)
  fresh = gus.fresh_noise_scores(tiny_model, clean_model, m.base_images,
                                 m.manipulated_clean_labels, m.noise_std, 3,
                                 draws=10)
  assert gus.tpr_at_fpr(scores, fresh, 0.01) > 0.9


# --- the membership test and its analytic curves ----------------------------


def test_analytic_tradeoff():
  fpr = np.linspace(0.0, 1.0, 101)
  np.testing.assert_allclose(gus.analytic_tradeoff(fpr, 0.0), fpr, atol=1e-6)
  np.testing.assert_allclose(gus.analytic_tradeoff_two_sided(fpr, 0.0), fpr,
                             atol=1e-6)
  inner = fpr[1:-1]
  curves = [np.asarray(gus.analytic_tradeoff(inner, mu)) for mu in (0, 1, 2)]
  assert (np.diff(np.stack(curves), axis=0) > 0).all()
  two = [np.asarray(gus.analytic_tradeoff_two_sided(inner, mu))
         for mu in (0, 1, 2)]
  assert (np.diff(np.stack(two), axis=0) > 0).all()
  assert (two[2] <= curves[2] + 1e-6).all()
  # Fig. 7's G_μ is the type-II error: 1 − TPR.
  np.testing.assert_allclose(gus.dong_tradeoff(inner, 2.0), 1 - curves[2],
                             atol=1e-6)
  assert float(jax.jit(gus.analytic_tradeoff)(0.01, 2.0)) == pytest.approx(
      0.3722, abs=1e-3)  # Φ(Φ⁻¹(0.01) + 2)


@pytest.mark.parametrize('target', [0.01, 0.05])
def test_tpr_at_fpr_matches_the_two_sided_curve(target):
  rng = np.random.default_rng(0)
  mu, n = 2.0, 40_000
  poison, fresh = rng.normal(mu, 1, n), rng.normal(0, 1, n)
  expected = float(gus.analytic_tradeoff_two_sided(target, mu))
  assert gus.tpr_at_fpr(poison, fresh, target) == pytest.approx(expected,
                                                                abs=0.03)
  fprs, tprs, _ = gus.membership_roc(poison, fresh)
  assert fprs[0] == 0 and tprs[-1] == 1
  # Same populations: chance.
  assert gus.tpr_at_fpr(rng.normal(0, 1, n), fresh, 0.05) == pytest.approx(
      0.05, abs=0.01)
  with pytest.raises(ValueError, match='fpr'):
    gus.tpr_at_fpr(poison, fresh, 1.5)
