"""SCRUB's steps reproduce the corrective benchmark's `methods.Scrub`
(tests/fixtures/reference/scrub.npz: 4 steps max, min, max, min).

Driven through the library's own pieces: `scrub.step_weights` (the loss
weights `scrub.unlearn` feeds each kind of step), `distill.distill_step` (the
step it runs), `training.make_optimizer` (SGD, momentum 0.9, coupled weight
decay) given the fixture's learning rate per step, and the teacher logits
from `training.predict_logits` (M_o in evaluation mode). One optimiser state
runs through all four steps, as `scrub.unlearn` threads it, so the momentum
buffer carries over between max- and min-steps as in the authors' code.
Tolerances: the fixtures README.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import reference_fixtures as ref
from unlearnjax import training
from unlearnjax.unlearn import distill, scrub

PHASE_TO_KIND = {'max': 'forget', 'min': 'retain'}
BN_MOMENTUM = 0.9   # flax's (torch's 0.1)


def _fixture_hparams(d, **changes) -> scrub.ScrubHparams:
  return scrub.ScrubHparams(distill_weight=float(d['meta/alpha']),
                            temperature=float(d['meta/kd_T']), **changes)


def _num_steps(d) -> int:
  return sum(1 for k in d if k.endswith('/phase'))


def _run_steps(hparams: scrub.ScrubHparams, num_steps: int):
  """The library's SCRUB step, driven as the fixture was: returns the initial
  state and, per step, (state after it, its metrics)."""
  d = ref.load('scrub')
  model, _, images, labels, _, _ = ref.model_and_data()
  rows = {'forget': d['rows_forget'], 'retain': d['rows_retain']}
  initial = ref.tree(d, 'step0/params')
  teacher = training.predict_logits(model, initial, images)
  lrs = jnp.asarray([float(d[f'step{k}/lr']) for k in range(1, num_steps + 1)],
                    jnp.float32)
  recipe = training.Recipe(momentum=float(d['meta/momentum']),
                           weight_decay=float(d['meta/wd']))
  tx = training.make_optimizer(recipe, learning_rate=lambda count: lrs[count])
  step = jax.jit(functools.partial(distill.distill_step, model=model, tx=tx,
                                   train_batchnorm=True))
  weights = scrub.step_weights(hparams)
  state = training.create_train_state(initial, tx)
  out = []
  for k in range(1, num_steps + 1):
    kind = PHASE_TO_KIND[str(d[f'step{k}/phase'])]
    take = rows[kind]
    batch = {'image': images[take], 'label': labels[take],
             'teacher_logits': teacher[take],
             **{name: np.float32(v) for name, v in weights[kind].items()}}
    state, metrics = step(state, batch)
    out.append((jax.device_get(state), jax.device_get(metrics)))
  return jax.device_get(training.create_train_state(initial, tx)), out


@pytest.fixture(scope='module')
def authors_form_steps():
  d = ref.load('scrub')
  with jax.default_matmul_precision('highest'):
    return _run_steps(_fixture_hparams(d), _num_steps(d))


def test_teacher_logits_are_the_originals_eval_mode_logits():
  d = ref.load('scrub')
  model, _, images, _, _, _ = ref.model_and_data()
  with jax.default_matmul_precision('highest'):
    teacher = training.predict_logits(model, ref.tree(d, 'step0/params'),
                                      images)
  np.testing.assert_allclose(teacher, d['teacher_logits_eval'], rtol=1e-5,
                             atol=1e-4)


def test_default_is_the_authors_objective():
  # Goel's code: max-step −(CE + α·KD), min-step CE + α·KD, α = 0.001, T = 4.
  hparams = scrub.ScrubHparams()
  assert (hparams.max_step, hparams.distill_weight, hparams.ce_weight,
          hparams.temperature) == ('ce_plus_kl', 0.001, 1.0, 4.0)
  weights = scrub.step_weights(hparams)
  assert weights['forget'] == dict(ce_weight=-1.0, kl_weight=-0.001,
                                   temperature=4.0)
  assert weights['retain'] == dict(ce_weight=1.0, kl_weight=0.001,
                                   temperature=4.0)
  assert [h.distill_weight for h in scrub.goel_grid(None)] == list(
      scrub.GOEL_DISTILL_WEIGHTS)
  assert all(h.max_step == 'ce_plus_kl' for h in scrub.goel_grid(None))


def test_unknown_max_step_is_rejected():
  with pytest.raises(ValueError, match='max_step must be one of'):
    scrub.step_weights(scrub.ScrubHparams(max_step='ce'))


def test_loss_and_kl_match_per_step(authors_form_steps):
  d = ref.load('scrub')
  _, steps = authors_form_steps
  for k, (_, metrics) in enumerate(steps, start=1):
    # 'loss' is forward_pass's value (negative on max-steps); 'kl' is the
    # code's distill_kl_loss, T² included.
    np.testing.assert_allclose(metrics['loss'], d[f'step{k}/loss'], rtol=1e-4,
                               err_msg=f'step {k}')
    np.testing.assert_allclose(metrics['kl'], d[f'step{k}/kl'], rtol=1e-4,
                               err_msg=f'step {k}')
  assert [str(d[f'step{k}/phase']) for k in range(1, 5)] == [
      'max', 'min', 'max', 'min']


def test_params_match_per_step(authors_form_steps):
  d = ref.load('scrub')
  _, steps = authors_form_steps
  for k, (state, _) in enumerate(steps, start=1):
    ref.assert_tree_close(state.params, ref.tree(d, f'step{k}/params')['params'],
                          rtol=1e-4, atol=1e-6)


def test_shared_momentum_buffer_matches_per_step(authors_form_steps):
  # The code's one torch SGD serves max- and min-steps; so does the one
  # optax state here: its trace is torch's momentum_buffer at every step.
  d = ref.load('scrub')
  _, steps = authors_form_steps
  for k, (state, _) in enumerate(steps, start=1):
    trace = optax.tree_utils.tree_get(state.opt_state, 'trace')
    reference = ref.tree(d, f'step{k}/momentum')['params']
    ref.assert_tree_close(trace, reference, rtol=1e-4,
                          atol_scale=1e-5)


def test_student_batchnorm_statistics_match_per_step(authors_form_steps):
  """The student runs in train mode: running statistics updated each step.

  torch updates running_var with the unbiased batch variance, flax with the
  biased one (README pitfalls). Flax's own update gives the biased batch
  variance, var_b = (var_new − 0.9·var_old)/0.1, so the test carries a
  torch-convention copy, 0.9·var_torch + 0.1·var_b·n/(n−1) with n = rows·H·W,
  and checks that at the parameters' tolerance; the raw flax value differs
  from torch's by the documented amount only.
  """
  d = ref.load('scrub')
  _, _, images, _, _, _ = ref.model_and_data()
  initial, steps = authors_form_steps
  rows = {'forget': d['rows_forget'], 'retain': d['rows_retain']}
  positions = images.shape[1] * images.shape[2]   # bn1 sees 8×8 (stride 1)
  old = initial.batch_stats['bn1']
  torch_var = np.asarray(old['var'], np.float64)
  for k, (state, _) in enumerate(steps, start=1):
    new = state.batch_stats['bn1']
    reference = ref.tree(d, f'step{k}/params')['batch_stats']['bn1']
    np.testing.assert_allclose(new['mean'], reference['mean'], rtol=1e-4,
                               atol=1e-6, err_msg=f'step {k}')
    n = rows[PHASE_TO_KIND[str(d[f'step{k}/phase'])]].size * positions
    batch_var = (np.asarray(new['var'], np.float64)
                 - BN_MOMENTUM * np.asarray(old['var'], np.float64)) / (
                     1 - BN_MOMENTUM)
    torch_var = (BN_MOMENTUM * torch_var
                 + (1 - BN_MOMENTUM) * batch_var * n / (n - 1))
    np.testing.assert_allclose(torch_var, reference['var'], rtol=1e-4,
                               atol=1e-6, err_msg=f'step {k}')
    # Raw flax statistics: below torch's by Σ 0.9^(k−j)·0.1·var_b,j/(n_j−1).
    gap = reference['var'] - np.asarray(new['var'])
    np.testing.assert_allclose(gap, torch_var - np.asarray(new['var']),
                               rtol=0.05, atol=1e-6, err_msg=f'step {k}')
    assert 0 < gap.max() < 1e-4
    old = new


def test_kurmanji_kl_only_max_step_departs_from_the_authors():
  """max_step='kl' (Kurmanji's SCRUB) ascends −KD alone, with weight 1.

  At step 1 the student is M_o, so its max-step loss is exactly −KD of the
  fixture's first step (0.415, nonzero only through BatchNorm's mode: the
  student in train mode, the teacher in eval mode), against the authors'
  −(CE + α·KD) = −1.531; the weights after that step differ from the
  authors' by far more than the equivalence tolerance.
  """
  d = ref.load('scrub')
  with jax.default_matmul_precision('highest'):
    _, steps = _run_steps(_fixture_hparams(d, max_step='kl'), 1)
  state, metrics = steps[0]
  assert str(d['step1/phase']) == 'max'
  np.testing.assert_allclose(metrics['loss'], -d['step1/kl'], rtol=1e-4)
  np.testing.assert_allclose(metrics['kl'], d['step1/kl'], rtol=1e-4)
  assert abs(float(metrics['loss']) - float(d['step1/loss'])) > 1.0
  authors = ref.tree(d, 'step1/params')['params']
  gap = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(
      jax.tree.leaves(state.params), jax.tree.leaves(authors)))
  assert gap > 1e-3   # the equivalence tolerance is ~1e-4 relative


def test_library_schedule_warms_up_one_step_later_than_linear_lr():
  """`scrub.unlearn` uses the recipe's schedule, not the code's LinearLR.

  With w warm-up steps and peak L, the code's lr at 0-based step t < w is
  L·(t+1)/(w+1) (the fixture's `stepK/lr`), the library's L·t/w: its first
  step has lr 0 and it trails by L·(w−t)/(w·(w+1)), at most L/(w+1) (9% of
  the peak at w = 10); both reach L at t = w.
  """
  d = ref.load('scrub')
  peak = float(d['meta/unlearn_lr'])
  steps = int(d['meta/unlearn_iters'])
  recipe = training.Recipe(steps=steps, learning_rate=peak)
  warmup = max(1, int(round(recipe.warmup_fraction * steps)))
  assert warmup == steps // 100     # the code's warmup_epochs
  schedule = training.learning_rate_schedule(recipe)
  t = np.arange(_num_steps(d))
  authors = np.asarray([float(d[f'step{k}/lr']) for k in t + 1])
  library = np.asarray([float(schedule(i)) for i in t])
  np.testing.assert_allclose(authors - library,
                             peak * (warmup - t) / (warmup * (warmup + 1)),
                             rtol=1e-5)
  assert library[0] == 0.0
