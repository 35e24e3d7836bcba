"""Crafted poisons: gradient matching (Pawelczyk Alg. 1) and gradient
canceling (Alg. 2) on the 8x8 digits with a tiny CNN."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tree_allclose
from unlearnjax import parallel, training
from unlearnjax.data.split import Split
from unlearnjax.manipulations import gradient_canceling as gc
from unlearnjax.manipulations import gradient_matching as gm

# Two crafting configurations (and 2 targets × 2 restarts, 4 poisons each)
# for the whole file, so the sharded step compiles twice.
EPSILON = 0.1
PLAIN = gm.CraftingConfig(epsilon=EPSILON, bounds=(0.0, 1.0), steps=10,
                          learning_rate_fraction=0.1, max_shift=0)
AUGMENTED = gm.CraftingConfig(epsilon=EPSILON, bounds=(0.0, 1.0), steps=10,
                              learning_rate_fraction=0.1, max_shift=1,
                              flip=True)
SMALL = dict(num_targets=2, num_poisons=8, restarts=2, crafting_steps=10,
             epsilon=EPSILON, augment=False, model_kwargs={'width': 8})


@pytest.fixture(scope='module')
def surrogate(tiny_model, digits):
  """An untrained tiny CNN: crafting works on any θ, and this is fast."""
  return training.init_variables(tiny_model, jax.random.key(0),
                                 digits[0].image_shape)


@pytest.fixture(scope='module')
def targeted(digits, surrogate):
  train, _, test = digits
  return gm.manipulate(train, test, seed=0, surrogate_variables=surrogate,
                       **SMALL)


def _targets(digits, count=2, per_target=4):
  train, _, test = digits
  rng = np.random.default_rng(0)
  adversarial = np.asarray([1, 7][:count], np.int32)
  base = np.stack([train.images[rng.choice(np.flatnonzero(
      train.labels == a), per_target, replace=False)] for a in adversarial])
  targets = test.images[[np.flatnonzero(test.labels == c)[0]
                         for c in (3, 5)][:count]]
  return base, adversarial, targets


# ---------------------------------------------------------------------------
# Gradient matching.


def test_targeted_poisoning_shapes_and_bound(digits, targeted):
  train, _, test = digits
  m = targeted
  assert m.manipulated.size == 8 == m.info['num_poisons']
  assert m.info['poisons_per_target'] == 4
  assert m.perturbations.shape == m.base_images.shape == (8, 8, 8, 1)
  assert m.perturbations.dtype == np.float32
  assert m.target_images.shape == (2, 8, 8, 1)
  assert m.target_labels.dtype == m.adversarial_labels.dtype == np.int32
  # Δ within ε (float32 rounding of x + Δ − x aside) and the data range.
  assert np.abs(m.perturbations).max() <= EPSILON + 1e-6
  assert np.abs(m.perturbations).max() > 0
  poisoned = m.train.images[m.manipulated]
  np.testing.assert_array_equal(poisoned, m.base_images + m.perturbations)
  assert poisoned.min() >= 0.0 and poisoned.max() <= 1.0
  # Clean-label attack: labels untouched, poisons of their target's y_adv.
  np.testing.assert_array_equal(m.train.labels, train.labels)
  np.testing.assert_array_equal(
      m.train.labels[m.manipulated], m.adversarial_labels[m.poison_targets])
  np.testing.assert_array_equal(np.bincount(m.poison_targets), [4, 4])
  untouched = np.setdiff1d(np.arange(len(train)), m.manipulated)
  np.testing.assert_array_equal(m.train.images[untouched],
                                train.images[untouched])
  # D_m: the targets with their TRUE labels; the rest of the test set apart.
  assert (m.target_labels != m.adversarial_labels).all()
  np.testing.assert_array_equal(m.affected.labels, m.target_labels)
  np.testing.assert_array_equal(m.affected.images, m.target_images)
  np.testing.assert_array_equal(
      test.labels[m.info['target_test_rows']], m.target_labels)
  assert len(m.unaffected) == len(test) - 2
  assert not np.isin(m.unaffected.ids, m.affected.ids).any()
  assert len(m.info['matching_loss']) == 2


def test_target_success(targeted, tiny_model, surrogate):
  rate = gm.target_success(tiny_model, surrogate, targeted)
  predictions = training.predict(tiny_model, surrogate,
                                 targeted.target_images)
  assert rate == np.mean(predictions == targeted.adversarial_labels)


def test_targeted_poisoning_is_seeded(digits, surrogate, targeted):
  train, _, test = digits
  again = gm.manipulate(train, test, seed=0, surrogate_variables=surrogate,
                        **SMALL)
  np.testing.assert_array_equal(again.manipulated, targeted.manipulated)
  np.testing.assert_allclose(again.perturbations, targeted.perturbations,
                             atol=1e-6)
  other = gm.manipulate(train, test, seed=1, surrogate_variables=surrogate,
                        **SMALL)
  assert not np.array_equal(other.manipulated, targeted.manipulated)


def test_fixed_classes_and_own_surrogate(digits):
  train, _, test = digits
  m = gm.manipulate(train, test, seed=0, target_class=3, adversarial_label=8,
                    surrogate_steps=4, surrogate_batch_size=64, **SMALL)
  assert (m.target_labels == 3).all() and (m.adversarial_labels == 8).all()
  assert (train.labels[m.manipulated] == 8).all()
  assert m.info['surrogate']['recipe']['steps'] == 4


def test_bad_settings_raise(digits, surrogate):
  train, _, test = digits
  common = dict(seed=0, surrogate_variables=surrogate)
  for epsilon in (0.0, -0.1, float('nan'), float('inf')):
    with pytest.raises(ValueError, match='epsilon'):
      gm.manipulate(train, test, epsilon=epsilon, **common)
  with pytest.raises(ValueError, match='poison budget'):
    gm.manipulate(train, test, poison_fraction=0.0, **common)
  with pytest.raises(ValueError, match='poison budget'):
    gm.manipulate(train, test, num_poisons=3, num_targets=4, **common)
  no_threes = test.subset(np.flatnonzero(test.labels != 3))
  with pytest.raises(ValueError, match='target_class 3 has 0 test images'):
    gm.manipulate(train, no_threes, target_class=3, **common)
  with pytest.raises(ValueError, match='differ'):
    gm.manipulate(train, test, target_class=2, adversarial_label=2, **common)
  with pytest.raises(ValueError, match='outside'):
    gm.manipulate(train, test, target_class=10, **common)
  with pytest.raises(ValueError, match='fewer than the'):
    gm.manipulate(train, test, adversarial_label=1, num_poisons=500,
                  **common)
  with pytest.raises(ValueError, match='restarts'):
    gm.manipulate(train, test, restarts=0, **common)


def test_crafting_loss_decreases_and_restarts_keep_best(digits, tiny_model,
                                                        surrogate):
  base, adversarial, targets = _targets(digits)
  config = PLAIN  # as the `targeted` fixture: compiled once
  result = gm.craft_perturbations(tiny_model, surrogate, base, adversarial,
                                  targets, key=jax.random.key(0),
                                  config=config, restarts=2)
  assert result.loss_history.shape == (10, 2, 2)
  assert result.restart_losses.shape == (2, 2)
  assert result.perturbations.shape == base.shape
  # No augmentation: the last recorded φ is that of step 29's input; the
  # objective falls over the steps for every job.
  history = result.loss_history
  assert (history[-3:].mean(0) < history[:3].mean(0)).all()
  assert (result.restart_losses < history[0]).all()
  # Best restart kept: its φ is the minimum, and recomputing φ of the
  # returned Δ gives it.
  np.testing.assert_allclose(result.best_loss,
                             result.restart_losses.min(axis=1))
  target_grads = gm._jitted_target_gradients(tiny_model)(
      surrogate, jnp.asarray(targets), jnp.asarray(adversarial))
  for t in range(2):
    grad_t = jax.tree.map(lambda g, t=t: g[t], target_grads)
    loss = gm.matching_loss(jnp.asarray(result.perturbations[t]),
                            jnp.asarray(base[t]), adversarial[t], grad_t,
                            None, model=tiny_model, variables=surrogate,
                            config=config)
    np.testing.assert_allclose(float(loss), result.best_loss[t], rtol=1e-4,
                               atol=1e-6)
  assert np.abs(result.perturbations).max() <= EPSILON + 1e-7


def test_jitted_sharded_step_equals_reference(digits, tiny_model, surrogate):
  """The sharded, vmapped, jitted step (with augmentation) against the plain
  per-job step run op by op, job by job."""
  base, adversarial, targets = _targets(digits)
  target_grads = gm._jitted_target_gradients(tiny_model)(
      surrogate, jnp.asarray(targets), jnp.asarray(adversarial))
  jobs = np.asarray([0, 0, 1, 1])  # 2 targets × 2 restarts
  tx = AUGMENTED.optimizer()
  keys = jax.random.split(jax.random.key(3), 4)
  job_base = base[jobs]
  perturbations = jax.vmap(lambda k: jax.random.uniform(
      k, base.shape[1:], jnp.float32, -EPSILON, EPSILON))(keys)
  job_grads = jax.tree.map(lambda g: np.asarray(g)[jobs], target_grads)
  key_data = np.asarray(jax.random.key_data(keys))
  state = gm.CraftState(perturbations, jax.vmap(tx.init)(perturbations))
  # Reference first (the jitted step donates its state).
  reference = {}
  for j in (2,):  # eager second-order steps are slow: one job suffices
    opt_state = jax.tree.map(lambda s, j=j: s[j], state.opt_state)
    grad_j = jax.tree.map(lambda g, j=j: g[j], job_grads)
    out = gm.job_step(perturbations[j], opt_state, jnp.asarray(job_base[j]),
                      adversarial[jobs[j]], grad_j, jnp.asarray(key_data[j]),
                      jnp.asarray(2), model=tiny_model, variables=surrogate,
                      config=AUGMENTED, tx=tx)
    reference[j] = jax.device_get(out)
  sharded = parallel.shard_batch(
      (jax.device_get(state), job_base, adversarial[jobs], job_grads,
       key_data))
  step_fn = gm.jitted_craft_step(tiny_model, AUGMENTED)
  new_state, loss = step_fn(*sharded, jnp.asarray(2),
                            parallel.replicate(surrogate))
  new_state, loss = jax.device_get((new_state, loss))
  for j in reference:
    np.testing.assert_allclose(new_state.perturbations[j], reference[j][0],
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(loss[j], reference[j][2], rtol=1e-4,
                               atol=1e-6)
    tree_allclose(jax.tree.map(lambda s, j=j: s[j], new_state.opt_state),
                  reference[j][1], rtol=1e-3, atol=1e-8)


def test_augmentation_is_differentiable():
  images = jnp.arange(2 * 6 * 6, dtype=jnp.float32).reshape(2, 6, 6, 1)
  key = jax.random.key(0)
  same = gm.augment(images, key, max_shift=0, flip=False)
  np.testing.assert_array_equal(same, images)
  moved = gm.augment(images, key, max_shift=2, flip=True)
  assert moved.shape == images.shape
  grad = jax.grad(lambda x: jnp.sum(gm.augment(x, key, max_shift=2,
                                               flip=True) ** 2))(images)
  assert np.abs(np.asarray(grad)).sum() > 0


# ---------------------------------------------------------------------------
# Gradient canceling.


class _Linear(nn.Module):
  """logits = flatten(x) W + b: per-example gradients by hand."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train):
    del train
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


def _linear_gradients(kernel, bias, images, labels):
  """Per-example ∂ℓ/∂W = x (p − e_y)ᵀ and ∂ℓ/∂b = p − e_y (numpy)."""
  x = images.reshape(images.shape[0], -1).astype(np.float64)
  logits = x @ kernel + bias
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  p[np.arange(len(labels)), labels] -= 1.0
  return x[:, :, None] * p[:, None, :], p


def test_canceling_objective_matches_hand_computation():
  rng = np.random.default_rng(0)
  model = _Linear(3)
  variables = training.init_variables(model, jax.random.key(1), (2, 2, 1))
  clean_x = rng.random((10, 2, 2, 1)).astype(np.float32)
  clean_y = rng.integers(0, 3, 10).astype(np.int32)
  base = rng.random((4, 2, 2, 1)).astype(np.float32)  # 3 real + 1 padded
  labels = np.asarray([0, 2, 1, 0], np.int32)
  mask = np.asarray([1, 1, 1, 0], np.float32)
  delta = (0.2 * rng.standard_normal(base.shape)).astype(np.float32)
  kernel = np.asarray(variables['params']['Dense_0']['kernel'], np.float64)
  bias = np.asarray(variables['params']['Dense_0']['bias'], np.float64)
  _, clean_gradient = gc.mean_gradient(model, variables, clean_x, clean_y)
  cw, cb = _linear_gradients(kernel, bias, clean_x, clean_y)
  np.testing.assert_allclose(clean_gradient['Dense_0']['kernel'],
                             cw.mean(0), rtol=1e-5, atol=1e-7)
  for weight in (1.0, 0.3):
    config = gc.CancelingConfig(epsilon=np.inf, bounds=(-np.inf, np.inf),
                                poison_gradient_weight=weight, num_poisons=3)
    objective = gc.canceling_objective(
        jnp.asarray(delta), jnp.asarray(base), jnp.asarray(labels),
        jnp.asarray(mask), clean_gradient, variables, model=model,
        config=config)
    pw, pb = _linear_gradients(kernel, bias, (base + delta)[:3], labels[:3])
    expected = 0.5 * (np.sum((cw.mean(0) + weight * pw.mean(0)) ** 2)
                      + np.sum((cb.mean(0) + weight * pb.mean(0)) ** 2))
    np.testing.assert_allclose(float(objective), expected, rtol=1e-5)
  assert gc.resolve_poison_gradient_weight('paper', 5, 100) == 1.0
  assert gc.resolve_poison_gradient_weight('proportional', 5, 100) == 0.05
  with pytest.raises(ValueError, match='poison_gradient_weight'):
    gc.resolve_poison_gradient_weight('half', 5, 100)


def test_canceling_objective_decreases(digits):
  train, _, _ = digits
  model = _Linear(10)
  variables = training.init_variables(model, jax.random.key(2),
                                      train.image_shape)
  _, clean_gradient = gc.mean_gradient(model, variables, train.images[:256],
                                       train.labels[:256])
  config = gc.CancelingConfig(epsilon=0.2, bounds=(0.0, 1.0),
                              poison_gradient_weight=1.0, num_poisons=6,
                              step_size=0.01, optimizer='adam')
  perturbations, history = gc.cancel_gradients(
      model, variables, clean_gradient, train.images[:6], train.labels[:6],
      config=config, steps=10)
  assert history.shape == (11,)
  assert (np.diff(history) < 0).sum() >= 8 and history[-1] < history[0]
  assert np.abs(perturbations).max() <= 0.2 + 1e-7


def test_jitted_canceling_step_equals_eager(digits):
  """The jitted step, poisons split over the 4 devices (2 of 8 rows
  padded), against the same pure function run op by op on one device."""
  train, _, _ = digits
  model = _Linear(10)
  variables = training.init_variables(model, jax.random.key(2),
                                      train.image_shape)
  _, clean_gradient = gc.mean_gradient(model, variables, train.images[:64],
                                       train.labels[:64])
  config = gc.CancelingConfig(epsilon=0.2, bounds=(0.0, 1.0),
                              poison_gradient_weight=0.5, num_poisons=6,
                              step_size=0.05, optimizer='gd')
  batch = {'base': train.images[100:108],
           'label': train.labels[100:108],
           'mask': np.asarray([1] * 6 + [0] * 2, np.float32)}
  delta = np.random.default_rng(0).uniform(
      -0.1, 0.1, batch['base'].shape).astype(np.float32)
  reference = jax.device_get(gc.canceling_step(
      jnp.asarray(delta), config.transform().init(jnp.asarray(delta)),
      jax.tree.map(jnp.asarray, batch), clean_gradient, variables,
      model=model, config=config))
  sharded_delta = parallel.shard_batch(delta)
  out = jax.device_get(gc.jitted_canceling_step(model, config)(
      sharded_delta, config.transform().init(sharded_delta),
      parallel.shard_batch(batch), parallel.replicate(clean_gradient),
      parallel.replicate(variables)))
  np.testing.assert_allclose(out[0], reference[0], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(out[2], reference[2], rtol=1e-4)


def test_gradpc_stays_in_the_ball_and_raises_the_loss(digits, tiny_model,
                                                      surrogate):
  train, _, _ = digits
  images, labels = train.images[:256], train.labels[:256]
  low, losses = gc.corrupt_parameters(tiny_model, surrogate, images, labels,
                                      parameter_bound=0.5, steps=3,
                                      step_size_fraction=0.5)
  distance = np.sqrt(sum(np.sum((np.asarray(a) - np.asarray(b)) ** 2)
                         for a, b in zip(jax.tree.leaves(low['params']),
                                         jax.tree.leaves(surrogate['params']))))
  assert distance <= 0.5 + 1e-4
  assert losses[-1] > losses[0]
  with pytest.raises(ValueError, match='parameter_bound'):
    gc.corrupt_parameters(tiny_model, surrogate, images, labels,
                          parameter_bound=0.0, steps=1,
                          step_size_fraction=0.5)


def test_indiscriminate_poisoning_end_to_end(digits, surrogate):
  train, _, test = digits
  settings = dict(num_poisons=6, epsilon=0.2, canceling_steps=3,
                  canceling_optimizer='adam', canceling_step_size=0.01,
                  corruption_steps=2, parameter_bound=0.1,
                  model_kwargs={'width': 8}, surrogate_variables=surrogate)
  m = gc.manipulate(train, test, seed=0, **settings)
  n = len(train)
  assert len(m.train) == n + 6
  np.testing.assert_array_equal(m.manipulated, n + np.arange(6))
  np.testing.assert_array_equal(m.train.images[:n], train.images)
  rows = np.asarray(m.info['poison_rows'])
  np.testing.assert_array_equal(m.base_images, train.images[rows])
  np.testing.assert_array_equal(m.train.labels[n:], train.labels[rows])
  np.testing.assert_array_equal(m.manipulated_clean_labels,
                                train.labels[rows])
  np.testing.assert_array_equal(m.train.ids[n:], train.ids[rows])
  np.testing.assert_array_equal(m.train.images[n:],
                                m.base_images + m.perturbations)
  assert np.abs(m.perturbations).max() <= 0.2 + 1e-6
  assert m.perturbations.dtype == np.float32
  assert m.affected is test and m.unaffected is test
  assert m.info['objective_final'] <= m.info['objective_initial']
  np.testing.assert_array_equal(m.clean_indices, np.arange(n))
  again = gc.manipulate(train, test, seed=0, **settings)
  np.testing.assert_allclose(again.perturbations, m.perturbations,
                             atol=1e-6)
  common = dict(seed=0, surrogate_variables=surrogate)
  with pytest.raises(ValueError, match='epsilon'):
    gc.manipulate(train, test, epsilon=0.0, **common)
  with pytest.raises(ValueError, match='poisons'):
    gc.manipulate(train, test, poison_fraction=0.0, **common)
  with pytest.raises(ValueError, match='canceling_optimizer'):
    gc.manipulate(train, test, canceling_optimizer='lbfgs', **common)


def test_split_without_class_raises_for_adversarial_label(digits, surrogate):
  train, _, test = digits
  no_ones = Split(train.images[train.labels != 1],
                  train.labels[train.labels != 1], train.num_classes)
  with pytest.raises(ValueError, match='fewer than the'):
    gm.manipulate(no_ones, test, seed=0, adversarial_label=1,
                  surrogate_variables=surrogate)
