"""RELOAD's pieces reproduce the authors' `knowledge_values.save_kv` and
`unlearn/RELOAD.py:RELOAD()` (tests/fixtures/reference/reload.npz), at both
stored gradient batch sizes (B16: D in 4 batches, D_new in 16, 16, 16, 8;
B256: one batch each).

Through the library's own functions: `reload.full_data_gradient` (the sum of
per-batch-mean gradients over consecutive batches, model in eval mode, as
`save_kv` accumulates them), `reload.knowledge_values` (eq. 8),
`reload.reset_lowest` (the reset mask and the reset) and
`reload.priming_step`. The one deliberate departure, the priming sign, has
its own test. Tolerances: the fixtures README.
"""

import jax
import numpy as np
import pytest

import reference_fixtures as ref
from unlearnjax.data.split import Split
from unlearnjax.unlearn import reload

BATCH_SIZES = (16, 256)


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(x, np.float64))
                         for x in jax.tree.leaves(tree)])


def _zeros(tree):
  return jax.tree.map(lambda x: np.zeros_like(np.asarray(x)), tree)


@pytest.fixture(scope='module')
def library_gradients():
  """{B: (g_D, g_new)} from `full_data_gradient` over the fixture's rows."""
  d = ref.load('reload')
  model, variables, images, labels, _, _ = ref.model_and_data()
  split = Split(images, labels, 10)
  out = {}
  with jax.default_matmul_precision('highest'):
    for batch_size in BATCH_SIZES:
      out[batch_size] = tuple(
          reload.full_data_gradient(model, variables, split,
                                    d[f'B{batch_size}/rows_{which}'],
                                    batch_size=batch_size)
          for which in ('D', 'new'))
  return out


@pytest.mark.parametrize('batch_size', BATCH_SIZES)
def test_data_and_new_gradients_match(batch_size, library_gradients):
  d = ref.load('reload')
  g_data, g_new = library_gradients[batch_size]
  for name, got in (('g_D', g_data), ('g_new', g_new)):
    ref.assert_tree_close(got, ref.params_tree(d, f'B{batch_size}/{name}'),
                          rtol=1e-4, atol_scale=1e-6)


def test_gradients_are_sums_of_batch_means_not_means(library_gradients):
  """Like `save_kv`, g sums per-batch means, so at B16 it is not a multiple
  of the mean gradient when the last batch is partial.

  D's 64 rows fill 4 batches of 16: g_D(B16) = 4·g_D(B256) up to float noise.
  D_new's 56 rows end in a batch of 8, whose rows count 1/8 instead of 1/16:
  g_new(B16) differs from 3.5·g_new(B256) by about 4.5% (L2), so
  g_D − g_new is not proportional to the forget set's gradient (eq. 4-7 hold
  for sums over samples). In the authors' pipeline, the rows that fall in
  the partial batch are those of a random shuffle.
  """
  d = ref.load('reload')
  batches = {which: d[f'B16/rows_{which}'].size / 16 for which in ('D', 'new')}
  assert batches == {'D': 4.0, 'new': 3.5}
  g16 = [_flat(g) for g in library_gradients[16]]
  g256 = [_flat(g) for g in library_gradients[256]]
  data_gap = np.abs(g16[0] - 4 * g256[0]).max() / np.abs(g16[0]).max()
  assert data_gap < 1e-5
  new_gap = np.linalg.norm(g16[1] - 3.5 * g256[1]) / np.linalg.norm(g16[1])
  assert 0.02 < new_gap < 0.1, new_gap


@pytest.mark.parametrize('batch_size', BATCH_SIZES)
def test_knowledge_values_match(batch_size):
  # eq. 8 on the code's own gradients.
  d = ref.load('reload')
  group = f'B{batch_size}'
  knowledge = reload.knowledge_values(ref.params_tree(d, f'{group}/g_D'),
                                      ref.params_tree(d, f'{group}/g_new'),
                                      float(d['epsilon']))
  ref.assert_tree_close(knowledge, ref.params_tree(d, f'{group}/kv'),
                        rtol=1e-4)


@pytest.mark.parametrize('batch_size', BATCH_SIZES)
def test_reset_mask_matches_from_the_librarys_gradients(batch_size,
                                                        library_gradients):
  """End to end: the library's g_D, g_new → KV → mask, exactly the code's.

  KV from the library's own gradients is compared at rtol 1e-3: where
  g_D − g_new cancels (down to 1.7e-5 against |g_D| = 0.03), float32 noise
  of ~1e-7·max|g| in the gradients is ~1e-4 of KV. The README's smallest
  relative gap at the cut (1%) keeps the mask exact.
  """
  d = ref.load('reload')
  group = f'B{batch_size}'
  g_data, g_new = library_gradients[batch_size]
  knowledge = reload.knowledge_values(g_data, g_new, float(d['epsilon']))
  ref.assert_tree_close(knowledge, ref.params_tree(d, f'{group}/kv'),
                        rtol=1e-3)
  params = ref.params_tree(d, 'params_before')
  _, mask = reload.reset_lowest(params, knowledge, _zeros(params),
                                float(d['threshold']))
  reference = ref.params_tree(d, f'{group}/reset_mask')
  for got, want in zip(jax.tree.leaves(mask), jax.tree.leaves(reference)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want) == 1)
  assert int(_flat(mask).sum()) == int(d[f'{group}/n_reset'])
  assert reload.num_to_reset(_flat(params).size, float(d['threshold'])) == (
      int(d[f'{group}/n_reset']))


@pytest.mark.parametrize('batch_size', BATCH_SIZES)
def test_reset_matches_with_zero_initialisation(batch_size):
  """`reset_lowest` with zeros as the fresh values (the code's default
  `--init Zero`) on the code's primed weights gives its `after_reset`."""
  d = ref.load('reload')
  group = f'B{batch_size}'
  knowledge = reload.knowledge_values(ref.params_tree(d, f'{group}/g_D'),
                                      ref.params_tree(d, f'{group}/g_new'),
                                      float(d['epsilon']))
  primed = ref.params_tree(d, f'{group}/after_priming')
  reset, _ = reload.reset_lowest(primed, knowledge, _zeros(primed),
                                 float(d['threshold']))
  ref.assert_tree_close(reset, ref.params_tree(d, f'{group}/after_reset'),
                        rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('batch_size', BATCH_SIZES)
def test_priming_keeps_the_sign_the_code_drops(batch_size):
  """The code primes along |g_D − g_new| (its in-place `abs_`); the library
  along g_D − g_new (RELOAD Alg. 1 line 6). Given |g_D − g_new|, the
  library's `priming_step` reproduces the code's `after_priming`; with the
  signed gradients it agrees wherever g_D ≥ g_new and is lower by
  2·η_p·|g_D − g_new| elsewhere (about half of the 430 entries here)."""
  d = ref.load('reload')
  group = f'B{batch_size}'
  step_size = float(d['ga_lr'])
  params = ref.params_tree(d, 'params_before')
  authors = ref.params_tree(d, f'{group}/after_priming')
  code_form = reload.priming_step(
      params, ref.params_tree(d, f'{group}/returned_gradients'),
      _zeros(params), step_size)
  ref.assert_tree_close(code_form, authors, rtol=1e-5, atol=1e-6)

  signed = reload.priming_step(params, ref.params_tree(d, f'{group}/g_D'),
                               ref.params_tree(d, f'{group}/g_new'), step_size)
  direction = _flat(ref.params_tree(d, f'{group}/g_D_minus_g_new'))
  gap = _flat(authors) - _flat(signed)
  upward = direction >= 0
  np.testing.assert_allclose(gap[upward], 0, atol=1e-6 + 1e-5 * np.abs(
      _flat(authors)[upward]).max())
  np.testing.assert_allclose(gap[~upward], 2 * step_size * np.abs(
      direction[~upward]), rtol=1e-4, atol=1e-6)
  assert 0.25 < (~upward).mean() < 0.75
  assert gap.max() > 1e-2   # far outside any equivalence tolerance


def test_reset_count_rounds_where_the_code_truncates():
  """The code resets n − int(n·(1 − α)) (ranks ≥ int(n·(1 − α))), the
  library round(α·n): equal at the fixture's n, one fewer at n = 431."""
  d = ref.load('reload')
  threshold = float(d['threshold'])
  n = _flat(ref.params_tree(d, 'params_before')).size
  code_count = lambda n, alpha: n - int(n * (1 - alpha))
  assert reload.num_to_reset(n, threshold) == code_count(n, threshold) == int(
      d['B16/n_reset'])
  assert (reload.num_to_reset(431, 0.1), code_count(431, 0.1)) == (43, 44)
