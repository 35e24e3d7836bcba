"""Importances (Fisher, LF, XLF) and the PTN search (Potion §3, Alg. 1, eq. 7)."""

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest

from unlearnjax import forget as forget_lib
from unlearnjax import importance, training
from unlearnjax.unlearn import UnlearnTask, get_method, ptn, ssd
from conftest import tree_allclose


class Linear(nn.Module):
  """f(x) = W·flatten(x) + b: importances by hand."""
  num_classes: int = 3

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


def _linear_setup():
  model = Linear()
  variables = training.init_variables(model, jax.random.key(0), (2, 2, 1))
  rng = np.random.default_rng(0)
  images = rng.normal(size=(6, 2, 2, 1)).astype(np.float32)
  labels = rng.integers(0, 3, size=6).astype(np.int32)
  return model, variables, images, labels


@pytest.mark.parametrize('name,power', [('lf', 2.0), ('xlf', 1.0),
                                        ('xlf', 3.0)])
def test_output_norm_importance_by_hand(name, power):
  """∂‖Wx+b‖^w/∂W = w‖f‖^(w−2)·f xᵀ, ∂/∂b = w‖f‖^(w−2)·f (Potion eq. 3-4)."""
  model, variables, images, labels = _linear_setup()
  kernel = np.asarray(variables['params']['Dense_0']['kernel'])
  bias = np.asarray(variables['params']['Dense_0']['bias'])
  x = images.reshape(6, -1)
  f = x @ kernel + bias
  w = 2.0 if name == 'lf' else power
  scale = w * np.linalg.norm(f, axis=1) ** (w - 2)
  expected_kernel = np.mean(np.abs(scale[:, None, None] * x[:, :, None]
                                   * f[:, None, :]), axis=0)
  expected_bias = np.mean(np.abs(scale[:, None] * f), axis=0)
  got = importance.parameter_importance(model, variables, images, labels,
                                        importance=name,
                                        output_norm_power=power)
  np.testing.assert_allclose(got['Dense_0']['kernel'], expected_kernel,
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got['Dense_0']['bias'], expected_bias,
                             rtol=1e-4, atol=1e-6)


def test_fisher_importance_by_hand():
  """∂CE/∂W = x (softmax(f) − onehot(y))ᵀ, squared and averaged."""
  model, variables, images, labels = _linear_setup()
  kernel = np.asarray(variables['params']['Dense_0']['kernel'])
  bias = np.asarray(variables['params']['Dense_0']['bias'])
  x = images.reshape(6, -1)
  f = x @ kernel + bias
  p = np.exp(f - f.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  delta = p - np.eye(3)[labels]
  expected = np.mean((x[:, :, None] * delta[:, None, :]) ** 2, axis=0)
  got = importance.parameter_importance(model, variables, images, labels,
                                        importance='fisher')
  np.testing.assert_allclose(got['Dense_0']['kernel'], expected, rtol=1e-4,
                             atol=1e-7)


@pytest.mark.parametrize('name', ['fisher', 'lf', 'xlf'])
def test_exact_importance_equals_the_loop(name, trained, tiny_model):
  manipulation, _, variables = trained
  images = manipulation.train.images[:10]
  labels = manipulation.train.labels[:10]
  kind = importance.get_importance(name)

  def one(params, image, label):
    logits = tiny_model.apply({'params': params,
                               'batch_stats': variables['batch_stats']},
                              image[None], train=False)[0]
    return kind.scalar(logits, label, 1.0)

  per_sample = [jax.tree.map(kind.magnitude,
                             jax.grad(one)(variables['params'], x, y))
                for x, y in zip(images, labels)]
  loop = jax.tree.map(lambda *g: np.mean(np.stack(g), 0), *per_sample)
  exact = importance.parameter_importance(tiny_model, variables, images,
                                          labels, importance=name)
  tree_allclose(exact, loop, rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize('name', ['fisher', 'lf', 'xlf'])
def test_per_batch_equals_exact_at_batch_size_one(name, trained, tiny_model):
  manipulation, _, variables = trained
  images = manipulation.train.images[:7]
  labels = manipulation.train.labels[:7]
  exact = importance.parameter_importance(tiny_model, variables, images,
                                          labels, importance=name)
  per_batch = importance.parameter_importance(
      tiny_model, variables, images, labels, importance=name,
      estimator='per_batch', batch_size=1)
  tree_allclose(exact, per_batch, rtol=2e-4, atol=1e-7)


def test_unknown_importance_and_estimator_are_rejected(trained, tiny_model):
  manipulation, _, variables = trained
  x, y = manipulation.train.images[:2], manipulation.train.labels[:2]
  with pytest.raises(ValueError, match='xlf'):
    importance.parameter_importance(tiny_model, variables, x, y,
                                    importance='nope')
  with pytest.raises(ValueError, match='estimator'):
    importance.parameter_importance(tiny_model, variables, x, y,
                                    estimator='nope')


def test_ptn_threshold_formula():
  """eq. 7: p = 100 − ln(1 + 100 s); τ = P_p of the finite ratios."""
  hparams = ptn.PTNHparams(start_buffer=25, step_multiplier=1.1, max_tries=5)
  s = ptn.strengths(10, 1000, hparams)
  np.testing.assert_allclose(s, 10 / 1000 / 25 * 1.1 ** np.arange(5))
  np.testing.assert_allclose(ptn.percentile_of_strength(s),
                             100 - np.log(1 + 100 * s))
  assert ptn.percentile_of_strength(1e50) == 0.0  # clipped into [0, 100]
  i_train = {'a': np.array([1.0, 2.0, 0.0, 4.0]), 'b': np.array([[0.0, 1.0]])}
  i_forget = {'a': np.array([2.0, 2.0, 3.0, 1.0]), 'b': np.array([[0.0, 5.0]])}
  ratios = ptn.finite_ratios(i_train, i_forget)  # 3/0 = inf, 0/0 = nan: out
  np.testing.assert_allclose(np.sort(ratios), [0.25, 1.0, 2.0, 5.0])
  np.testing.assert_allclose(
      ptn.thresholds(ratios, s),
      np.percentile(ratios, 100 - np.log(1 + 100 * s)))


@pytest.mark.parametrize('seed', range(5))
def test_dampening_never_increases_a_magnitude(seed):
  rng = np.random.default_rng(seed)
  shape = (50,)
  params = {'w': rng.normal(size=shape).astype(np.float32)}
  i_train = {'w': np.abs(rng.normal(size=shape)).astype(np.float32)
             * (rng.random(shape) > 0.2)}
  i_forget = {'w': np.abs(rng.normal(size=shape) * 3).astype(np.float32)}
  for threshold in (0.0, 0.5, 1.0, 10.0):
    for dampening in (0.1, 1.0, 10.0):
      out = ssd.dampen(params, i_train, i_forget, threshold, dampening)
      assert np.all(np.abs(np.asarray(out['w'])) <= np.abs(params['w']))


def _task(trained, tiny_model, tiny_recipe, fraction):
  manipulation, validation, variables = trained
  forget = forget_lib.sample_forget(manipulation.manipulated, fraction, 0)
  return UnlearnTask(model=tiny_model, original=variables,
                     train=manipulation.train, forget=forget,
                     retain=forget_lib.retain_indices(len(manipulation.train),
                                                      forget),
                     validation=validation, recipe=tiny_recipe)


def test_candidate_accuracies_equal_dampen_then_predict(trained, tiny_model,
                                                        tiny_recipe):
  task = _task(trained, tiny_model, tiny_recipe, 1.0)
  (i_train, _), (i_forget, _) = ptn.importances(task, ptn.PTNHparams())
  ratios = ptn.finite_ratios(i_train, i_forget)
  taus = np.percentile(ratios, [99.99, 99.5, 98.0, 90.0])
  vectorised = ptn.candidate_accuracies(tiny_model, task.original, i_train,
                                        i_forget, taus, task.forget_split)
  for tau, acc in zip(taus, vectorised):
    params = ssd.dampen(task.original['params'], i_train, i_forget, tau, 1.0)
    expected = training.accuracy(
        tiny_model, {'params': params,
                     'batch_stats': task.original['batch_stats']},
        task.forget_split)
    assert acc == pytest.approx(expected)


@pytest.mark.parametrize('name', ['ptn_ssd', 'ptn_lf', 'ptn_xlf'])
@pytest.mark.parametrize('fraction', [0.3, 1.0, forget_lib.ONE_SHOT])
def test_vectorised_and_sequential_search_pick_the_same_s(
    name, fraction, trained, tiny_model, tiny_recipe):
  task = _task(trained, tiny_model, tiny_recipe, fraction)
  method = get_method(name)
  picks = []
  for vectorised, per_call in ((False, 1), (True, 16), (True, 3)):
    hparams = dataclasses.replace(method.hparams(), vectorised=vectorised,
                                  candidates_per_call=per_call)
    out = method.unlearn(task, hparams, jax.random.key(0))
    picks.append(out)
  first = picks[0]
  for other in picks[1:]:
    assert other.info['ptn_tries'] == first.info['ptn_tries']
    assert other.info['ptn_strength'] == first.info['ptn_strength']
    tree_allclose(other.variables, first.variables)
  info = first.info
  if info['ptn_reached_threshold']:
    assert info['forget_accuracy'] <= 0.2 * info['original_forget_accuracy'] \
        + 1e-9
  assert 0 < info['dampened_share'] < 1


def test_ptn_stops_at_the_first_candidate_past_rho(trained, tiny_model,
                                                   tiny_recipe):
  """The pick is the least aggressive s past ρ·Acc_f(M_o): the one before it
  (if any) is still above the threshold."""
  task = _task(trained, tiny_model, tiny_recipe, 1.0)
  hparams = ptn.PTNHparams(importance='fisher')
  (i_train, _), (i_forget, _) = ptn.importances(task, hparams)
  result = ptn.search(task.model, task.original, i_train, i_forget,
                      task.forget_split, len(task.train), hparams)
  target = hparams.over_forgetting_buffer * result.original_forget_accuracy
  accuracies = [acc for _, _, acc in result.trail]
  assert result.reached_threshold
  assert accuracies[result.index] <= target
  assert all(acc > target for acc in accuracies[:result.index])
  # Larger s, lower percentile, lower threshold: more aggressive.
  taus = [tau for _, tau, _ in result.trail]
  assert all(a >= b for a, b in zip(taus, taus[1:]))


def test_ptn_importances_of_the_training_data_are_computed_once(
    trained, tiny_model, tiny_recipe):
  cache = {}
  for fraction in (0.3, 0.6, 1.0):
    task = dataclasses.replace(_task(trained, tiny_model, tiny_recipe,
                                     fraction), cache=cache)
    method = get_method('ptn_xlf_exact')  # I_D over S_tr (Alg. 1 line 1)
    method.unlearn(task, method.hparams(), jax.random.key(0))
  # one I_D for all three forget sets, one I_f each
  assert len(cache) == 4


def test_ptn_defaults_are_the_authors_per_batch_retain_set_estimate(
    trained, tiny_model, tiny_recipe):
  """ptn_xlf's defaults: per-batch, I_D over D_r, shuffled batches of the
  recipe's size; one I_D per retain set and one per shuffling key."""
  hparams = get_method('ptn_xlf').hparams()
  assert (hparams.estimator, hparams.importance_data, hparams.shuffle) == (
      'per_batch', 'retain', True)
  task = _task(trained, tiny_model, tiny_recipe, 0.5)
  out = get_method('ptn_xlf').unlearn(task, hparams, jax.random.key(0))
  assert out.info['importance_batch_size_used'] == tiny_recipe.batch_size
  assert len(task.cache) == 2
  get_method('ptn_xlf').unlearn(task, hparams, jax.random.key(0))
  assert len(task.cache) == 2  # same key: memoised
  get_method('ptn_xlf').unlearn(task, hparams, jax.random.key(1))
  assert len(task.cache) == 4  # another shuffle: other importances
  (a, _), _ = ptn.importances(task, hparams, jax.random.key(0))
  (b, _), _ = ptn.importances(task, hparams, jax.random.key(1))
  assert any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a),
                                                   jax.tree.leaves(b)))


def test_ptn_hparams_are_checked():
  with pytest.raises(ValueError, match='over_forgetting_buffer'):
    ptn.PTNHparams(over_forgetting_buffer=1.5)
  with pytest.raises(ValueError, match='importance'):
    ptn.PTNHparams(importance='nope')
  with pytest.raises(ValueError, match='step_multiplier'):
    ptn.PTNHparams(step_multiplier=1.0)
  assert get_method('ptn_lf').hparams().importance == 'lf'
  assert get_method('ptn_ssd').hparams().importance == 'fisher'
