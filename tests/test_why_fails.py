"""Why unlearning fails (Pawelczyk et al. §6, App. C): the planted synthetic
task, the study end to end on the sweep engine (smoke config), its report,
divergence rows, and the script's config overrides and errors. The convex
solvers are tested in test_convex.py."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearnjax import cli, convex, results, sweep
from unlearnjax.errors import ConfigError
from unlearnjax.reports import why_fails as report
from unlearnjax.studies import why_fails

ROOT = os.path.join(os.path.dirname(__file__), '..')
CONFIG_PATH = os.path.join(ROOT, 'experiments', 'configs', 'why_fails.py')
_spec = importlib.util.spec_from_file_location('why_fails_config', CONFIG_PATH)
why_fails_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(why_fails_config)


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
    theta_corr = convex.ridge_fit(x_corr, y_corr, jnp.ones(n + p), 0.0, n + p)
    target = convex.ridge_fit(x_corr, y_corr, retain, 0.0, n + p)
    v = theta_corr - target
    v_perp = v * (jnp.arange(dim) >= k)
    assert float(jnp.linalg.norm(v_perp)) > 0.1 * float(jnp.linalg.norm(v))
    assert float(jnp.abs(target[k:]).max()) < 1e-10   # min-norm clean fit
    _, stats = convex.clean_gradient_descent(
        jax.random.key(3), theta_corr, target, v_perp, x, y, 0.0,
        float(n + p), lr=0.5, steps=200, batch_size=n, signal_dim=k)
    _, minibatch = convex.clean_gradient_descent(
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


def test_plan_groups_share_the_expensive_set_up():
  """One Fig. 4 group (the fixed extractor) with a run per (poison, seed,
  β); one Fig. 5 group per seed with a run per forget set."""
  config = _smoke_config()
  config.seeds = (0, 1)
  plan = why_fails.plan(config, '/nonexistent')   # builds, runs nothing
  shift, *alignment = plan.groups
  assert [(r.identity['poison'], r.identity['seed'], r.identity['beta'])
          for r in shift.runs] == [
              (k, s, b) for k in ('badnet', 'gaussian') for s in (0, 1)
              for b in (0.5, 1.0)]
  assert [[(r.identity['seed'], r.identity['forget']) for r in g.runs]
          for g in alignment] == [[(0, 'poison'), (0, 'random')],
                                  [(1, 'poison'), (1, 'random')]]
  assert len(plan.keys) == 8 + 4
  config.parts = ('gradient_alignment',)
  assert len(why_fails.plan(config, '/nonexistent').groups) == 2


def test_smoke_study_writes_rows_and_figures(study):
  workdir, rows = study
  shift = [r for r in rows if r['part'] == 'model_shift']
  align = [r for r in rows if r['part'] == 'gradient_alignment']
  assert len(shift) == 2 * 2 and len(align) == 2   # (poison, β); forget sets
  assert {r['poison'] for r in shift} == {'badnet', 'gaussian'}
  assert not any(r['diverged'] for r in rows)
  for r in shift:
    assert r['grad_norm_max'] < r['tol']
    assert r['n_removed'] == round(r['beta'] * r['n_poisons'])
    for field in ('shift_poison_l1', 'shift_poison_l2', 'shift_random_l1',
                  'shift_random_l2'):
      assert r[field] > 0, field
    assert r['seconds'] >= 0 and r['compile_seconds'] >= 0
  # The β rows of one (poison, seed) share its solves, hence its timing.
  for kind in ('badnet', 'gaussian'):
    assert len({r['seconds'] for r in shift if r['poison'] == kind}) == 1
  for r in align:
    assert len(r['curves']['cos_minibatch']) == 20
    assert len(r['red_curves']['dist_l2']) == 20
    assert r['shift_l1'] >= 0.99 * r['poison_shift_l1']   # equalised ℓ1
    assert r['setup_seconds'] >= 0 and r['seconds'] >= 0
  path = report.write_report(rows, workdir)
  for name in ('model_shift.png', 'model_shift.md', 'gradient_alignment.png',
               'gradient_alignment.md', 'report.md'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  assert path == os.path.join(workdir, 'report.md')
  text = open(path).read()
  assert '| β (n = 1 seed) |' in text and '(n = 1 seed)' in text
  assert '![Fig. 4: model shift](model_shift.png)' in text
  assert {r['run_key'] for r in results.read_rows(workdir)} == {
      r['run_key'] for r in rows}


def test_report_rebuilds_from_the_workdir(study, tmp_path, capsys):
  """python -m unlearnjax.reports.why_fails --workdir=DIR (in process)."""
  workdir, _ = study
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns('checkpoints'))
  for name in ('report.md', 'model_shift.md', 'model_shift.png'):
    if os.path.exists(os.path.join(copy, name)):
      os.remove(os.path.join(copy, name))
  report.main([f'--workdir={copy}'])
  assert os.path.join(copy, 'report.md') in capsys.readouterr().out
  assert os.path.getsize(os.path.join(copy, 'model_shift.png')) > 0


def test_rerun_skips_finished_rows(study, monkeypatch):
  workdir, rows = study

  def no_work(*args, **kwargs):
    raise AssertionError('a finished row was redone')

  for module, name in ((why_fails, '_feature_setup'),
                       (why_fails, '_alignment_setup'),
                       (sweep, 'trained_model'), (convex, 'fit_logistic'),
                       (convex, 'gradient_canceling'),
                       (convex, 'clean_gradient_descent')):
    monkeypatch.setattr(module, name, no_work)
  again = why_fails.run(_smoke_config(), workdir)
  assert sorted(r['run_key'] for r in again) == sorted(
      r['run_key'] for r in rows)


def test_diverged_runs_are_rows_and_the_sweep_goes_on(study, tmp_path,
                                                      monkeypatch):
  """L-BFGS short of the tolerance (Fig. 4) and a FloatingPointError in a
  Fig. 5 descent each become `diverged` rows; the other runs finish, and a
  (poison, seed)'s β runs do not solve again after its failure."""
  workdir, _ = study
  copy = str(tmp_path / 'diverged')
  shutil.copytree(os.path.join(workdir, 'checkpoints'),
                  os.path.join(copy, 'checkpoints'))   # the extractor
  fit_logistic, descent = convex.fit_logistic, convex.clean_gradient_descent
  solves = []

  def unconverged(*args, **kwargs):
    params, grad_norm, iterations = fit_logistic(*args, **kwargs)
    solves.append(1)
    return params, grad_norm + jnp.inf, iterations

  def random_set_diverges(key, theta0, target, direction, x, *args, **kwargs):
    if x.shape[0] < _smoke_config().gradient_alignment.n:   # S_rand removed
      raise FloatingPointError('descent diverged (test)')
    return descent(key, theta0, target, direction, x, *args, **kwargs)

  monkeypatch.setattr(convex, 'fit_logistic', unconverged)
  monkeypatch.setattr(convex, 'clean_gradient_descent', random_set_diverges)
  config = _smoke_config()
  outcome = sweep.execute(why_fails.plan(config, copy), copy)
  assert outcome.complete and len(outcome.rows) == 6
  shift = [r for r in outcome.rows if r['part'] == 'model_shift']
  assert all(r['diverged'] for r in shift)
  assert all('L-BFGS stopped at ‖∇f‖ = inf' in r['error'] for r in shift)
  assert {(r['poison'], r['beta']) for r in shift} == {
      (k, b) for k in ('badnet', 'gaussian') for b in (0.5, 1.0)}
  # 1 + 2 len(β) subsets per (poison, seed), solved once for both β rows.
  assert len(solves) == 2 * (1 + 2 * 2)
  align = {r['forget']: r for r in outcome.rows
           if r['part'] == 'gradient_alignment'}
  assert not align['poison']['diverged'] and 'cos_minibatch_mean' in align[
      'poison']
  assert align['random']['diverged']
  assert align['random']['error'] == 'descent diverged (test)'
  assert align['random']['seed'] == 0 and 'setting_key' in align['random']
  # The report reads only the finished rows.
  path = report.write_report([r for r in outcome.rows if not r['diverged']],
                             copy)
  assert 'Hypothesis 2' in open(path).read()
  assert not os.path.exists(os.path.join(copy, 'model_shift.png'))


@pytest.mark.parametrize('changes,message', [
    ({'parts': ('model_shift', 'fig6')}, "Unknown part 'fig6'"),
    ({'model_shift.poisons': ('badnet', 'trojan')}, "Unknown poison 'trojan'"),
    ({'model_shift.betas': (0.0, 0.5)}, r'outside \(0, 1\]'),
    ({'model_shift.l2': 0.0}, 'must be > 0'),
    ({'gradient_alignment.signal_dim': 0}, 'signal_dim < dim'),
    ({'dataset': 'imagenet'}, 'Unknown dataset'),
])
def test_bad_config_is_rejected_before_any_work(changes, message, tmp_path):
  config = _smoke_config()
  for path, value in changes.items():
    *parents, name = path.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = value
  with pytest.raises(ConfigError, match=message):
    why_fails.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'results.jsonl')


def _documented_overrides() -> list[str]:
  """The `--config.<field>=` overrides the config's docstring documents."""
  return re.findall(r'--config\.[\w.]+=\S+', why_fails_config.__doc__)


def test_every_documented_override_parses_and_validates(tmp_path,
                                                         monkeypatch):
  """The config's documented `--config.<field>=` overrides (this study runs
  no registered method, so it has no `hparams`) reach the config through
  absl flags as the script parses them, and the study accepts them."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  overrides = _documented_overrides()
  assert len(overrides) >= 4, overrides
  argv = ['why_fails', f'--config={CONFIG_PATH}:smoke', *overrides]
  monkeypatch.setattr(sys, 'argv', argv)   # config_flags reads the overrides
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', CONFIG_PATH, flag_values=values,
                                  lock_config=True)
  values(argv)
  config = values.config
  cli.split_comma_lists(config)
  assert config.seeds == (0, 1, 2)
  assert config.parts == ('model_shift',)
  assert config.model_shift.poisons == ('ic', 'gaussian')
  assert config.gradient_alignment.l2 == 0.03
  plan = why_fails.plan(config, str(tmp_path))   # validates, runs nothing
  assert {r.identity['poison'] for g in plan.groups for r in g.runs} == {
      'ic', 'gaussian'}


def _script(tmp_path, *flags_):
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'why_fails.py'),
       f'--workdir={tmp_path}', *flags_],
      capture_output=True, text=True, timeout=300,
      env={**os.environ, 'XLA_FLAGS': ''})


@pytest.mark.parametrize('flags_,message', [
    ((f'--config={CONFIG_PATH}:smoke', '--config.model_shift.bogus=1'),
     "config.model_shift has no field 'bogus'; valid: badnet, betas, "
     'gaussian, ic, l2, '),
    (('--config.gradient_alignment.gd.lrr=0.1',),   # default config, too
     "config.gradient_alignment.gd has no field 'lrr'"),
    ((f'--config={CONFIG_PATH}:smoke',
      '--config.model_shift.poisons=badnet,trojan'),
     "error: Unknown poison 'trojan' in model_shift.poisons; valid: badnet, "
     'ic, gaussian'),
])
def test_script_reports_a_wrong_override_in_one_line(tmp_path, flags_,
                                                     message):
  proc = _script(tmp_path, *flags_)
  assert proc.returncode == 1
  assert message in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not os.path.exists(tmp_path / 'results.jsonl')
