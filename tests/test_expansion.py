"""Expanding S_f to the rest of S_m (unlearnjax/expansion; Goel et al. 2024
§2): scores on planted cases, the calibrated false-positive rate on a clean
held-out split, label consistency on a relabelled class, and expand_retrain
on a small BadNet task."""

import dataclasses
import sys

from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import pytest

from unlearnjax import expansion
from unlearnjax import forget as forget_lib
from unlearnjax import training
from unlearnjax.data.split import Split
from unlearnjax.expansion import _features, _gradients, calibrate
from unlearnjax.expansion import label_consistency
from unlearnjax.unlearn import METHODS, UnlearnTask, get_method
from unlearnjax.unlearn.base import as_unlearned
from unlearnjax.unlearn.registry import default_hparams, hparams_field_types

DUPLICATE_SCORES = ('gradient_cosine', 'gradient_nearest', 'feature_cosine',
                    'feature_nearest', 'input_cosine', 'input_nearest')


def _task(model, variables, train, forget, validation, recipe):
  forget = np.sort(np.asarray(forget, np.int64))
  return UnlearnTask(
      model=model, original=variables, train=train, forget=forget,
      retain=forget_lib.retain_indices(len(train), forget),
      validation=validation, recipe=recipe)


def _planted(train: Split, source: int) -> Split:
  """`train` with a copy of row `source` appended (row len(train))."""
  return Split(np.concatenate([train.images, train.images[source][None]]),
               np.concatenate([train.labels, train.labels[source][None]]),
               train.num_classes,
               np.concatenate([train.ids, train.ids[source][None]]))


@pytest.fixture(scope='module')
def planted_tasks(trained, tiny_model, tiny_recipe):
  """{'mean': one-shot S_f, 'nearest': five S_f}: a duplicate of one forget
  sample planted in retain (row len(train))."""
  manipulation, validation, variables = trained
  forget = manipulation.manipulated[:5]
  tasks = {}
  for kind, rows, source in (('mean', forget[:1], forget[0]),
                             ('nearest', forget, forget[2])):
    tasks[kind] = _task(tiny_model, variables,
                        _planted(manipulation.train, source), rows, validation,
                        tiny_recipe)
  return tasks


@pytest.mark.parametrize('name', DUPLICATE_SCORES)
def test_a_planted_duplicate_of_a_forget_sample_ranks_first(name,
                                                            planted_tasks):
  # The mean of a one-sample S_f is that sample, so both kinds rank it first.
  task = planted_tasks['mean' if name.endswith('cosine') else 'nearest']
  scores = expansion.score_rows(task, name, task.retain)
  assert scores.shape == task.retain.shape
  assert task.retain[np.argmax(scores)] == len(task.train) - 1
  assert scores.max() == pytest.approx(1.0, abs=1e-4)
  # Leave-one-out: a forget sample is not its own nearest neighbour / mean.
  own = expansion.score_rows(task, name, task.forget)
  assert np.all(own < 1 - 1e-4), (name, own)


def test_sketched_gradients_still_find_the_duplicate(planted_tasks):
  task = planted_tasks['nearest']
  exact = _gradients.statistics(task, task.train)['cosines']
  sketched = _gradients.statistics(task, task.train, sketch_dim=4096)['cosines']
  assert np.argmax(sketched.max(axis=1)[task.retain]) == task.retain.size - 1
  assert np.corrcoef(exact.ravel(), sketched.ravel())[0, 1] > 0.9


@pytest.fixture(scope='module')
def badnet_task(trained, tiny_model, tiny_recipe):
  manipulation, validation, variables = trained
  forget = forget_lib.sample_forget(manipulation.manipulated, 0.5, 0)
  return _task(tiny_model, variables, manipulation.train, forget, validation,
               tiny_recipe)


def test_the_calibrated_rate_holds_on_a_clean_held_out_split(badnet_task,
                                                             digits):
  # Thresholds from the validation split; the clean test digits are scored
  # like any other sample. Per score: the share past its threshold is the
  # attained level within 3σ (binomial noise of both splits); the discrete
  # label score can only be below it (ties).
  _, _, clean = digits
  found = calibrate.expand(badnet_task, false_positive_rate=0.25)
  n_val, n_test = len(badnet_task.validation), len(clean)
  union = np.zeros(n_test, bool)
  for name, threshold in found.thresholds.items():
    level = found.levels[name]
    assert level <= 0.25 / len(found.thresholds) + 1e-12
    past = expansion.score_split(badnet_task, name, clean) > threshold
    union |= past
    sigma = np.sqrt(level * (1 - level) * (1 / n_val + 1 / n_test))
    assert past.mean() <= level + 3 * sigma, name
    if name != 'label_consistency':
      assert past.mean() >= level - 3 * sigma, name
  bound = found.false_positive_rate_bound
  assert union.mean() <= bound + 3 * np.sqrt(bound * (1 - bound) / n_test)


def test_a_small_validation_split_reports_the_level_it_attains(badnet_task):
  found = calibrate.expand(badnet_task)  # fpr 0.01 over K scores: 0.01/K
  n_val, k = len(badnet_task.validation), len(calibrate.DEFAULT_SCORES)
  assert n_val + 1 < k / 0.01
  assert all(level == pytest.approx(1 / (n_val + 1))
             for level in found.levels.values())
  assert found.expected_false_positives == pytest.approx(
      k / (n_val + 1) * badnet_task.retain.size)


def test_conformal_threshold_and_bad_inputs():
  threshold, level = calibrate.conformal_threshold(np.arange(99.0), 0.1)
  assert (threshold, level) == (89.0, 0.1)   # k = ⌈100·0.9⌉ = 90
  with pytest.raises(ValueError, match='false_positive_rate'):
    calibrate.check_false_positive_rate(1.0)
  with pytest.raises(ValueError, match='valid names: gradient_cosine'):
    expansion.get_score('mahalanobis')


def test_label_consistency_ranks_relabelled_samples_first(digits, tiny_model):
  train, validation, _ = digits
  rng = np.random.default_rng(0)
  threes = np.flatnonzero(train.labels == 3)
  relabelled = np.sort(rng.choice(threes, int(0.4 * threes.size),
                                  replace=False))
  labels = train.labels.copy()
  labels[relabelled] = 8
  poisoned = train.replace(labels=labels)
  recipe = training.Recipe(steps=150, batch_size=64, learning_rate=0.05)
  variables = training.fit(tiny_model, recipe, poisoned, jax.random.key(1))
  forget = relabelled[::2]
  task = _task(tiny_model, variables, poisoned, forget, validation, recipe)
  assert label_consistency.seen_swaps(task)[8, 3]
  scores = expansion.score_rows(task, 'label_consistency', task.retain)
  is_poison = np.isin(task.retain, relabelled)
  # AUC of relabelled (still in retain) against clean retain samples.
  poison, clean = scores[is_poison], scores[~is_poison]
  auc = (np.mean(poison[:, None] > clean[None])
         + 0.5 * np.mean(poison[:, None] == clean[None]))
  assert auc > 0.9, auc
  assert np.mean(clean > 0) < 0.1


def test_expand_retrain_finds_more_of_s_m_than_s_f(badnet_task, trained):
  manipulation = trained[0]
  method = get_method('expand_retrain')
  out = as_unlearned(method.unlearn(badnet_task, method.hparams(),
                                    jax.random.key(0)))
  info = out.info
  rows = np.asarray(info['expanded_forget_rows'])
  assert info['expanded_forget_rows'] == sorted(set(info['expanded_forget_rows']))
  assert all(isinstance(r, int) for r in info['expanded_forget_rows'])
  assert set(badnet_task.forget) <= set(rows.tolist())
  assert info['n_expanded'] == rows.size - badnet_task.forget.size
  assert info['expansion_seconds'] >= 0
  assert info['expansion_expected_false_positives'] > 0
  measured = calibrate.quality(rows, badnet_task.forget,
                               manipulation.manipulated)
  stub = calibrate.quality(badnet_task.forget, badnet_task.forget,
                           manipulation.manipulated)
  assert measured['expansion_recall'] > stub['expansion_recall'] == (
      measured['expansion_found_recall'])
  # The added rows are far richer in S_m than retain is (measured: 16 of 29
  # added are poisons, recall 0.51 -> 0.92; retain holds 1.5% poisons).
  base_rate = (np.setdiff1d(manipulation.manipulated, badnet_task.forget).size
               / badnet_task.retain.size)
  assert measured['expansion_added_precision'] > 10 * base_rate, measured
  # The expansion is cached on the task: a second method or grid reuses it.
  again = calibrate.expand(badnet_task)
  assert again is calibrate.expand(badnet_task)
  np.testing.assert_array_equal(again.rows, rows)


def test_expand_variants_are_registered_with_flat_hparams(badnet_task):
  for inner in ('retrain', 'finetune', 'ssd', 'ptn_xlf', 'ptn_xlf_exact',
                'scrub'):
    name = f'expand_{inner}'
    method = METHODS[name]
    assert method.name == name and not method.reads_corrected
    assert method.takes_budget == METHODS[inner].takes_budget
    assert default_hparams(name) == {**default_hparams(inner),
                                     'false_positive_rate': 0.01}
    assert hparams_field_types(name)['false_positive_rate'] is float
    assert method.hparams().inner() == METHODS[inner].hparams()
  with pytest.raises(ValueError, match='false_positive_rate'):
    METHODS['expand_finetune'].hparams(false_positive_rate=0.0)
  grid = METHODS['expand_ssd'].grid(badnet_task)
  assert [h.inner() for h in grid] == list(METHODS['ssd'].grid(badnet_task))


def test_the_method_name_parses_on_the_command_line():
  from experiments.configs import corrective  # pylint: disable=g-import-not-at-top
  argv = ['prog', '--config.hparams.expand_retrain.false_positive_rate=0.05']
  saved, sys.argv = sys.argv, argv
  try:
    holder = flags.FlagValues()
    config_flags.DEFINE_config_file('config', corrective.__file__,
                                    flag_values=holder, lock_config=True)
    holder(argv)
  finally:
    sys.argv = saved
  assert holder.config.hparams['expand_retrain'].false_positive_rate == 0.05


class _ConvHead(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    del train
    return jnp.mean(nn.Conv(10, (3, 3))(x), axis=(1, 2))


def test_a_model_without_a_dense_head_is_refused_by_name():
  model = _ConvHead()
  x = jnp.zeros((2, 8, 8, 1))
  variables = model.init(jax.random.key(0), x, train=False)
  with pytest.raises(ValueError, match='final nn.Dense head'):
    _features.penultimate(model, variables, x)


@pytest.mark.parametrize('name,kwargs', [
    ('small_cnn', {'width': 4}), ('resnet9', {'width': 4}),
    ('resnet9_goel', {'width': 4}), ('mlp', {'width': 8}),
    ('small_vgg', {'width': 4}), ('resnet18', {}), ('allcnn', {}),
    ('vit_tiny', {})])
def test_penultimate_features_are_the_input_of_the_head(name, kwargs):
  # Shapes only (jax.eval_shape): nothing runs, every model is checked.
  from unlearnjax import models  # pylint: disable=g-import-not-at-top
  model = models.get_model(name, 10, **kwargs)
  x = jax.ShapeDtypeStruct((3, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda: models.init_variables(model, jax.random.key(1), (32, 32, 3)))
  features = jax.eval_shape(
      lambda v, images: _features.penultimate(model, v, images), variables, x)
  assert features.shape[0] == 3 and len(features.shape) == 2
  # Some kernel maps the features to the 10 logits: the head's.
  kernels = [tuple(leaf.shape) for path, leaf in
             jax.tree_util.tree_flatten_with_path(variables['params'])[0]
             if path[-1].key == 'kernel']
  assert (features.shape[1], 10) in kernels, (name, kernels)
