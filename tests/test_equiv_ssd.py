"""SSD, LF/XLF and PTN's step against the authors' own code.

Fixtures (`tests/fixtures/reference/`, README there):
* `ssd.npz`: Foster's `ParameterPerturber.calc_importance` / `modify_weight`
  (SSD repo), per-batch at batch 24 in two row orders and at batch 1;
* `ssd_cub.npz`: Goel's benchmark `utils.ssd_tuning` as `methods.SSD` calls
  it (I_D over D_r);
* `potion_xlf.npz`: Potion's XLF/LF importances and `alfssd_tuning`'s PTN
  step at tries 0, 20 and 40, with D = S_tr and D = D_r.

Every library function is run on the fixtures' tiny model (rebuilt in Flax,
`reference_fixtures.TinyNet`); rows, batch sizes and settings come from the
files. Tolerances are the README's.
"""

import dataclasses

import jax
import numpy as np
import pytest

import reference_fixtures as ref
from unlearnjax import importance, training
from unlearnjax.data.split import Split
from unlearnjax.unlearn import UnlearnTask, get_method, ptn, ssd
from unlearnjax.unlearn.base import as_unlearned

IMPORTANCE_RTOL, IMPORTANCE_ATOL_SCALE = 1e-4, 1e-6
WEIGHT_RTOL, WEIGHT_ATOL = 1e-5, 1e-6


@pytest.fixture(autouse=True)
def _highest_precision():
  with jax.default_matmul_precision('highest'):
    yield


def _importance(kind, rows, batch_size):
  model, variables, images, labels, _, _ = ref.model_and_data()
  rows = np.asarray(rows, np.int64)
  return importance.parameter_importance(
      model, variables, images[rows], labels[rows], importance=kind,
      estimator='per_batch' if batch_size > 1 else 'exact',
      batch_size=int(batch_size))


def _assert_importance(actual, reference):
  ref.assert_tree_close(actual, reference, rtol=IMPORTANCE_RTOL,
                        atol=IMPORTANCE_ATOL_SCALE
                        * ref.scaled_atol(reference, 1.0))


def _changed(after, before) -> int:
  return sum(int(np.sum(np.asarray(a) != np.asarray(b)))
             for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before)))


def _task(rows_retain, rows_forget, batch_size):
  """An UnlearnTask over the 64 fixture images (labels: the true digits)."""
  model, variables, images, labels, _, _ = ref.model_and_data()
  train = Split(images, labels, 10)
  return UnlearnTask(
      model=model, original=variables, train=train,
      forget=np.sort(rows_forget), retain=np.sort(rows_retain),
      validation=train, recipe=training.Recipe(batch_size=int(batch_size)))


@pytest.mark.parametrize('variant', ['concat_B24', 'sorted_B24', 'concat_B1'])
def test_ssd_importances_equal_foster_calc_importance(variant):
  d = ref.load('ssd')
  batch = int(d[f'{variant}/batch_size'])
  _assert_importance(_importance('fisher', d[f'{variant}/rows_D'], batch),
                     ref.params_tree(d, f'{variant}/imp_D'))
  _assert_importance(_importance('fisher', d[f'{variant}/rows_f'], batch),
                     ref.params_tree(d, f'{variant}/imp_f'))


@pytest.mark.parametrize('variant', ['concat_B24', 'sorted_B24', 'concat_B1'])
@pytest.mark.parametrize('setting,threshold,dampening',
                         [('a10_l1', 10.0, 1.0), ('a1_l1', 1.0, 1.0)])
def test_ssd_dampen_equals_foster_modify_weight(variant, setting, threshold,
                                                dampening):
  """From the reference importances: the same entries change, by as much."""
  d = ref.load('ssd')
  before = ref.params_tree(d, 'params_before')
  after = ssd.dampen(before, ref.params_tree(d, f'{variant}/imp_D'),
                     ref.params_tree(d, f'{variant}/imp_f'), threshold,
                     dampening)
  expected = ref.params_tree(d, f'{variant}/{setting}/params')
  ref.assert_tree_close(after, expected, rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL)
  assert _changed(after, before) == int(d[f'{variant}/{setting}/n_changed'])
  for a, e, b in zip(*(jax.tree.leaves(t) for t in (after, expected, before))):
    np.testing.assert_array_equal(np.asarray(a) != b, e != b)


def test_ssd_unlearn_equals_goel_benchmark_ssd_tuning():
  """`ssd.unlearn` end to end, with the benchmark's I_D over D_r, in the
  fixture's fixed row order (`shuffle=False`) and its batch size."""
  d = ref.load('ssd_cub')
  task = _task(d['rows_Dr'], d['rows_f'], d['meta/batch_size'])
  assert list(task.retain) == list(d['rows_Dr'])  # the loader's order
  hparams = ssd.SSDHparams(
      selection_threshold=float(d['meta/SSDselectwt']),
      dampening_constant=float(d['meta/SSDdampening']), shuffle=False)
  assert hparams.estimator == 'per_batch'       # the default is the authors'
  assert hparams.importance_data == 'retain'
  i_retain, i_forget = ssd.importances(task, hparams)
  _assert_importance(i_retain, ref.params_tree(d, 'imp_Dr'))
  _assert_importance(i_forget, ref.params_tree(d, 'imp_f'))
  out = as_unlearned(ssd.unlearn(task, hparams, jax.random.key(0)))
  after = out.variables['params']
  ref.assert_tree_close(after, ref.params_tree(d, 'params_after'),
                        rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL)
  assert _changed(after, task.original['params']) == int(d['n_changed'])
  assert out.info['importance_batch_size_used'] == int(d['meta/batch_size'])


def test_ssd_exact_estimator_departs_from_the_per_batch_reference():
  """`ssd_exact` (the library's variant) is the per-sample mean of g²: equal
  to the reference at batch 1, and far from its batch-24 estimate."""
  d = ref.load('ssd')
  exact = _importance('fisher', d['concat_B24/rows_D'], 1)
  _assert_importance(exact, ref.params_tree(d, 'concat_B1/imp_D'))
  batch24 = ref.params_tree(d, 'concat_B24/imp_D')
  ratio = np.concatenate([np.ravel(np.asarray(e) / np.asarray(b)) for e, b in
                          zip(jax.tree.leaves(exact), jax.tree.leaves(batch24))])
  # Per-sample squares exceed the squares of batch means (Jensen): on this
  # model by a factor of several on most entries.
  assert np.median(ratio) > 2.0
  assert get_method('ssd_exact').hparams().estimator == 'exact'


@pytest.mark.parametrize('group', ['D', 'Dr'])
def test_xlf_importances_equal_potion_calc_importance(group):
  d = ref.load('potion_xlf')
  batch = int(d['batch_size'])
  _assert_importance(_importance('xlf', d[f'{group}/rows_D'], batch),
                     ref.params_tree(d, f'{group}/imp_D'))
  _assert_importance(_importance('xlf', d[f'{group}/rows_f'], batch),
                     ref.params_tree(d, f'{group}/imp_f'))


def test_lf_and_batch_one_xlf_equal_potion():
  d = ref.load('potion_xlf')
  rows_d, rows_f = d['D/rows_D'], d['D/rows_f']
  batch = int(d['batch_size'])
  _assert_importance(_importance('lf', rows_d, batch),
                     ref.params_tree(d, 'lf_B24/imp_D'))
  _assert_importance(_importance('lf', rows_f, batch),
                     ref.params_tree(d, 'lf_B24/imp_f'))
  _assert_importance(_importance('xlf', rows_d, 1),
                     ref.params_tree(d, 'xlf_B1/imp_D'))
  _assert_importance(_importance('xlf', rows_f, 1),
                     ref.params_tree(d, 'xlf_B1/imp_f'))


@pytest.mark.parametrize('group', ['D', 'Dr'])
@pytest.mark.parametrize('step', ['s0', 's1', 's2'])
def test_ptn_step_equals_potion_alfssd_tuning(group, step):
  """Strength, percentile, threshold and dampened weights of PTN try k."""
  d = ref.load('potion_xlf')
  rows_f = d[f'{group}/rows_f']
  n_train = 64  # S_tr: |S_f| + |D_r| of the fixture's pipeline
  assert len(rows_f) / n_train / ptn.PTNHparams().start_buffer == \
      pytest.approx(float(d['frac_dl0']))
  hparams = ptn.PTNHparams(max_tries=int(d[f'{group}/{step}/ptn_try']) + 1)
  strength = ptn.strengths(len(rows_f), n_train, hparams)[-1]
  np.testing.assert_allclose(strength, d[f'{group}/{step}/frac_dl'],
                             rtol=1e-6)
  np.testing.assert_allclose(ptn.percentile_of_strength(strength),
                             d[f'{group}/{step}/percentile_q'], rtol=1e-9)
  i_d = ref.params_tree(d, f'{group}/imp_D')
  i_f = ref.params_tree(d, f'{group}/imp_f')
  ratios = ptn.finite_ratios(i_d, i_f)
  np.testing.assert_allclose(np.sort(ratios), np.sort(d[f'{group}/ratios_used']),
                             rtol=1e-6)
  tau = float(ptn.thresholds(ratios, [strength])[0])
  np.testing.assert_allclose(tau, d[f'{group}/{step}/threshold'], rtol=1e-5)
  before = ref.params_tree(d, 'params_before')
  after = ssd.dampen(before, i_d, i_f, tau, 1.0)
  ref.assert_tree_close(after, ref.params_tree(d, f'{group}/{step}/params'),
                        rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL)
  assert _changed(after, before) == int(d[f'{group}/{step}/n_changed'])


def test_ptn_importances_with_the_default_settings_equal_potion_d_r():
  """`ptn.importances` on a task, with ptn_xlf's defaults (I_D over D_r, the
  recipe's batch) and the fixture's fixed order, gives Potion's XLF."""
  d = ref.load('potion_xlf')
  task = _task(d['Dr/rows_D'], d['Dr/rows_f'], d['batch_size'])
  hparams = dataclasses.replace(get_method('ptn_xlf').hparams(), shuffle=False)
  (i_d, _), (i_f, _) = ptn.importances(task, hparams)
  _assert_importance(i_d, ref.params_tree(d, 'Dr/imp_D'))
  _assert_importance(i_f, ref.params_tree(d, 'Dr/imp_f'))
  # The library's variant (Alg. 1 as written: I_D over S_tr, per sample).
  exact = get_method('ptn_xlf_exact').hparams()
  assert (exact.estimator, exact.importance_data) == ('exact', 'train')


def test_shuffled_per_batch_estimate_is_a_permutation_of_the_rows():
  """`shuffle_key` cuts the batches from permuted rows: the same importance
  as walking those permuted rows in order."""
  model, variables, images, labels, _, _ = ref.model_and_data()
  key = jax.random.key(3)
  order = np.asarray(jax.random.permutation(key, len(labels)))
  shuffled = importance.parameter_importance(
      model, variables, images, labels, importance='fisher',
      estimator='per_batch', batch_size=24, shuffle_key=key)
  walked = importance.parameter_importance(
      model, variables, images[order], labels[order], importance='fisher',
      estimator='per_batch', batch_size=24)
  ref.assert_tree_close(shuffled, walked, rtol=1e-6, atol=0)
