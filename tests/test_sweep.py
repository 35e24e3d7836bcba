"""The sweep engine: plans, workers, divergence, timing, resume."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from unlearnjax import results, sweep
from unlearnjax.studies import corrective

ROOT = os.path.join(os.path.dirname(__file__), '..')
sys.path.insert(0, os.path.join(ROOT, 'experiments'))
from configs import corrective as corrective_config  # pylint: disable=g-import-not-at-top,wrong-import-position

TIMING = ('seconds', 'seconds_per_config', 'compile_seconds')


def _toy_plan(calls, fail_at=None, diverge=()):
  """Two groups of three runs; `calls` counts set-ups and measures."""
  def group(g):
    def setup():
      calls.append(('setup', g))
      return {'base': 10 * g}

    def run(i):
      def measure(state):
        calls.append(('run', g, i))
        if (g, i) == fail_at:
          raise KeyboardInterrupt  # a kill in the middle of a run
        if (g, i) in diverge:
          raise FloatingPointError(f'NaN in run {g}/{i}')
        return {'value': state['base'] + i}
      return sweep.Run(f'key-{g}-{i}', f'g{g} r{i}', measure,
                       {'group': g, 'index': i})
    return sweep.Group(f'g{g}', setup, [run(i) for i in range(3)])
  return sweep.Plan('toy', [group(1), group(2)])


def test_runs_every_run_once_and_sets_up_lazily(tmp_path):
  calls = []
  outcome = sweep.execute(_toy_plan(calls), str(tmp_path), progress=False)
  assert outcome.complete and outcome.ran == 6
  assert sorted(r['value'] for r in outcome.rows) == [10, 11, 12, 20, 21, 22]
  assert calls.count(('setup', 1)) == 1 and calls.count(('setup', 2)) == 1
  calls.clear()
  again = sweep.execute(_toy_plan(calls), str(tmp_path), progress=False)
  assert calls == [] and again.ran == 0  # nothing redone, nothing set up
  assert len(again.rows) == 6


def test_a_kill_loses_only_the_run_in_flight(tmp_path):
  calls = []
  with pytest.raises(KeyboardInterrupt):
    sweep.execute(_toy_plan(calls, fail_at=(2, 1)), str(tmp_path),
                  progress=False)
  kept = results.read_rows(str(tmp_path))
  assert {(r['group'], r['index']) for r in kept} == {(1, 0), (1, 1), (1, 2),
                                                      (2, 0)}
  calls.clear()
  outcome = sweep.execute(_toy_plan(calls), str(tmp_path), progress=False)
  assert outcome.complete and outcome.ran == 2
  assert ('setup', 1) not in calls
  keys = [r['run_key'] for r in results.read_rows(str(tmp_path))]
  assert len(keys) == len(set(keys)) == 6


def test_a_diverging_run_is_a_row_and_the_sweep_goes_on(tmp_path):
  outcome = sweep.execute(_toy_plan([], diverge={(1, 1)}), str(tmp_path),
                          progress=False)
  assert outcome.complete
  diverged = [r for r in outcome.rows if r['diverged']]
  assert len(diverged) == 1
  assert diverged[0]['group'] == 1 and diverged[0]['index'] == 1
  assert 'NaN in run 1/1' in diverged[0]['error']
  assert len(outcome.rows) == 6
  assert len(results.read_rows(str(tmp_path), include_diverged=False)) == 5


@pytest.mark.parametrize('count', [1, 2, 3, 5])
def test_workers_take_disjoint_shares_covering_the_plan(tmp_path, count):
  plan = _toy_plan([])
  owners = sweep.assign(plan.groups, count)
  assert owners == sweep.assign(plan.groups, count)  # deterministic
  keys = []
  for index in range(count):
    out = sweep.execute(plan, str(tmp_path), sweep.Worker(index, count),
                        progress=False)
    keys += [r['run_key'] for r in results.ResultsFile(
        os.path.join(str(tmp_path), sweep.Worker(index, count).shard_name)
    ).rows()]
  assert sorted(keys) == sorted(plan.keys) and out.complete


def test_an_unfinished_worker_leaves_the_sweep_incomplete(tmp_path):
  out = sweep.execute(_toy_plan([]), str(tmp_path), sweep.Worker(0, 2),
                      progress=False)
  assert not out.complete and len(out.rows) == 3


@pytest.mark.parametrize('env,expected', [
    ({}, (0, 1)),
    ({'UNLEARNJAX_WORKER_INDEX': '1', 'UNLEARNJAX_NUM_WORKERS': '4'}, (1, 4)),
    ({'SLURM_ARRAY_TASK_ID': '7', 'SLURM_ARRAY_TASK_MIN': '5',
      'SLURM_ARRAY_TASK_COUNT': '3'}, (2, 3)),
    ({'SLURM_PROCID': '3', 'SLURM_NTASKS': '8'}, (3, 8)),
    ({'TPU_WORKER_ID': '1', 'TPU_WORKER_HOSTNAMES': 'a,b,c,d'}, (1, 4)),
])
def test_worker_from_the_scheduler_environment(env, expected):
  worker = sweep.worker_from_env(env)
  assert (worker.index, worker.count) == expected
  # Data-parallel (jax.distributed): one worker whatever the scheduler says.
  assert sweep.worker_from_env(env, distributed=True) == sweep.Worker()


def test_bad_worker_numbers_are_refused():
  with pytest.raises(ValueError, match='worker'):
    sweep.worker_from_env({'UNLEARNJAX_WORKER_INDEX': '4',
                           'UNLEARNJAX_NUM_WORKERS': '4'})


def test_timed_reports_compilation_apart():
  f = jax.jit(lambda x: jnp.tanh(x) @ x.T)
  x = jnp.ones((64, 64)) * 0.3
  with sweep.timed() as first:
    jax.block_until_ready(f(x))
  with sweep.timed() as second:
    jax.block_until_ready(f(x))
  assert first.compile_seconds > 0
  assert second.compile_seconds == 0
  assert first.seconds >= 0 and second.seconds >= 0


def _smoke():
  config = corrective_config.get_config('smoke')
  config.manipulations = ('badnet', 'ic')
  config.methods = ('finetune', 'ssd')
  config.found_fractions = (1.0,)
  config.one_shot = False
  config.recipe.steps = 20
  return config


def _strip(rows):
  return {r['run_key']: {k: v for k, v in r.items() if k not in TIMING}
          for r in rows}


def test_two_workers_give_the_rows_of_one(tmp_path):
  one = corrective.run(_smoke(), str(tmp_path / 'one'))
  split = []
  for index in range(2):
    split = corrective.run(_smoke(), str(tmp_path / 'two'),
                           sweep.Worker(index, 2))
  assert os.path.exists(tmp_path / 'two' / 'results-worker0.jsonl')
  assert os.path.exists(tmp_path / 'two' / 'results-worker1.jsonl')
  assert _strip(split) == _strip(one)


def test_launch_sh_runs_local_workers_and_writes_the_report(tmp_path):
  workdir = tmp_path / 'launch'
  out = subprocess.run(
      [os.path.join(ROOT, 'launch.sh'), 'corrective', '--workers=2',
       f'--workdir={workdir}', '--config=experiments/configs/corrective.py:smoke',
       '--config.methods=finetune', '--config.manipulations=badnet',
       '--config.recipe.steps=20', '--config.one_shot=False',
       '--config.found_fractions=1.0'],
      capture_output=True, text=True, timeout=600,
      env={**os.environ, 'PYTHON': sys.executable})
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr
  assert os.path.exists(workdir / 'report.md')
  rows = results.read_rows(str(workdir))
  assert {r['method'] for r in rows} == {'none', 'oracle', 'finetune'}
  assert all(json.dumps(r) for r in rows)


def test_launch_sh_refuses_a_bad_worker_count(tmp_path):
  out = subprocess.run([os.path.join(ROOT, 'launch.sh'), 'corrective',
                        '--workers=zero', f'--workdir={tmp_path}'],
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 2
  assert 'positive whole number' in out.stderr


def test_a_killed_worker_is_finished_by_rerunning_the_command(tmp_path):
  """Worker 1 of 2 dies before its first run (only worker 0's share is in
  the workdir, no report); rerunning `launch.sh --workers=2` runs exactly
  the missing share and writes the report."""
  workdir = tmp_path / 'killed'
  args = ['--config.methods=finetune', '--config.manipulations=badnet,ic',
          '--config.recipe.steps=20', '--config.one_shot=False',
          '--config.found_fractions=1.0']
  config = _smoke()
  config.methods = ('finetune',)
  corrective.run(config, str(workdir), sweep.Worker(0, 2))
  before = results.read_rows(str(workdir))
  assert before and not os.path.exists(workdir / 'report.md')
  out = subprocess.run(
      [os.path.join(ROOT, 'launch.sh'), 'corrective', '--workers=2',
       f'--workdir={workdir}',
       '--config=experiments/configs/corrective.py:smoke', *args],
      capture_output=True, text=True, timeout=600,
      env={**os.environ, 'PYTHON': sys.executable})
  assert out.returncode == 0, out.stderr[-2000:]
  after = results.read_rows(str(workdir))
  keys = [r['run_key'] for r in after]
  assert len(keys) == len(set(keys)) == 2 * 3  # 2 groups × (M_o, M*, CF)
  assert {r['run_key'] for r in before} <= set(keys)
  assert os.path.exists(workdir / 'report.md')
