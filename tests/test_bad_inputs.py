"""Bad input at the front door: every case ends in one clear line and exit 1.

Each case runs an experiments/ script as a new user would (a subprocess) in
a workdir that already holds a finished row, and asserts: a non-zero exit,
no Python traceback, the message (a pattern naming the field and what is
valid), and the results file byte for byte unchanged. The cases run two at
a time (the scripts spend their seconds importing JAX).

Recoveries (a corrupt checkpoint, an unreadable results line) are tested
apart, at the end: they must warn and finish, not fail.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from typing import Callable

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(study: str) -> str:
  return os.path.join(ROOT, 'experiments', f'{study}.py')


def smoke(study: str) -> str:
  return f'--config={os.path.join(ROOT, "experiments", "configs", study)}.py:smoke'


@dataclasses.dataclass(frozen=True)
class Case:
  study: str
  args: tuple[str, ...]
  message: str                       # a regex the error line must match
  smoke: bool = True                 # start from the study's smoke config
  prepare: Callable[[str], str] | None = None  # workdir -> the --workdir


def _file_workdir(workdir: str) -> str:
  path = os.path.join(workdir, 'a-file')
  with open(path, 'w') as f:
    f.write('not a directory\n')
  return path


def _unwritable_workdir(workdir: str) -> str:
  if os.geteuid() == 0:  # root writes through permissions: a sysfs path
    return '/sys/fs/unlearnjax-bad-input-workdir'
  os.chmod(workdir, stat.S_IRUSR | stat.S_IXUSR)
  return workdir


def _corrective_workdir(workdir: str) -> str:
  with open(os.path.join(workdir, 'STUDY'), 'w') as f:
    f.write('corrective\n')
  return workdir


def C(*args, message, study='corrective', **kw):
  return Case(study, tuple(args), message, **kw)


CASES = {
    # --- the table ---------------------------------------------------
    'steps_zero': C('--config.recipe.steps=0', message=r'recipe\.steps=0: must be a whole number >= 1'),
    'steps_negative': C('--config.recipe.steps=-5', message=r'recipe\.steps=-5: must be'),
    'seed_negative': C('--config.seeds=-1', message=r'seeds must be whole numbers >= 0'),
    'seed_negative_in_list': C('--config.seeds=0,-2', message=r'seeds must be whole numbers >= 0'),
    'hparams_unknown_field': C('--config.hparams.ssd.no_such_field=1', message=r'hparams\.ssd has no field .no_such_field.; valid: .*estimator'),
    'config_file_missing': C('--config=experiments/configs/nosuch.py', message=r'no config file .*nosuch\.py', smoke=False),
    'config_name_unknown': C('--config=experiments/configs/corrective.py:nosuch', message=r"Unknown config 'nosuch'; valid: default", smoke=False),
    'workdir_is_a_file': C(message=r'is a file, not a directory', prepare=_file_workdir),
    'workdir_unwritable': C(message=r'cannot be written', prepare=_unwritable_workdir),
    'image_size_12': C('--config.image_size=12', message=r'image_size must be a multiple of 8'),
    'badnet_target_class_10': C('--config.badnet.target_class=10', message=r'badnet\.target_class must be a class of digits: 0\.\.9'),
    'badnet_poison_fraction_1_5': C('--config.badnet.poison_fraction=1.5', message=r'badnet\.poison_fraction must be a number in \(0, 1\.0\)'),
    'ic_same_classes': C('--config.ic.class_b=3', message=r'class_a and class_b are the same class'),
    'batch_size_zero': C('--config.recipe.batch_size=0', message=r'recipe\.batch_size=0: must be a whole number >= 1'),
    'batch_not_divisible': C('--config.recipe.batch_size=63', message=r'batch_size=63 is not divisible by the 4 devices'),
    'second_study_in_workdir': C(message=r'holds the corrective study.s results; run potion in its own workdir', study='potion', prepare=_corrective_workdir),
    # --- corrective: names, ranges, types -------------------------------------
    'method_unknown': C('--config.methods=ssd,nosuch', message=r'methods=ssd,nosuch: methods is not one of: .*retrain'),
    'manipulation_unknown': C('--config.manipulations=nosuch', message=r'manipulations is not one of: .*badnet'),
    'found_fraction_zero': C('--config.found_fractions=0', message=r'found_fractions must be a number in \(0, 1\.0\]'),
    'found_fraction_above_one': C('--config.found_fractions=0.5,1.5', message=r'found_fractions must be a number in \(0, 1\.0\]'),
    'nothing_to_run': C('--config.found_fractions=()', '--config.one_shot=False', message=r'nothing to run'),
    'model_unknown': C('--config.model=nosuch', message=r'model is not one of: .*small_cnn'),
    'model_width_zero': C('--config.model_kwargs.width=0', message=r'model_kwargs\.width must be a whole number >= 1'),
    'dataset_unknown': C('--config.dataset=nosuch', message=r'dataset is not one of: digits'),
    'dataset_missing_offline': C('--config.dataset=cifar10', '--config.image_size=32', f'--config.data_dir={tempfile.gettempdir()}/unlearnjax-no-data', message=r"'cifar10' is not available .*download=False and it is not prepared locally"),
    'validation_fraction_zero': C('--config.validation_fraction=0.0', message=r'validation_fraction must be a number in \(0, 1\.0\)'),
    'validation_fraction_one': C('--config.validation_fraction=1.0', message=r'validation_fraction must be a number in \(0, 1\.0\)'),
    'max_train_negative': C('--config.max_train=-1', message=r'max_train must be a whole number >= 0'),
    'learning_rate_negative': C('--config.recipe.learning_rate=-0.1', message=r'recipe\.learning_rate=-0\.1: must be a finite number > 0'),
    'learning_rate_nan': C('--config.recipe.learning_rate=nan', message=r'recipe\.learning_rate=nan: must be a finite number > 0'),
    'momentum_above_one': C('--config.recipe.momentum=1.5', message=r'recipe\.momentum=1\.5: must be in \[0, 1\)'),
    'weight_decay_negative': C('--config.recipe.weight_decay=-1.0', message=r'recipe\.weight_decay=-1\.0: must be a finite number >= 0'),
    'warmup_above_one': C('--config.recipe.warmup_fraction=2.0', message=r'recipe\.warmup_fraction=2\.0: must be in \[0, 1\)'),
    'schedule_stretch_below_one': C('--config.recipe.schedule_stretch=0.5', message=r'schedule_stretch=0\.5: must be >= 1'),
    'eval_batch_zero': C('--config.recipe.eval_batch_size=0', message=r'eval_batch_size=0: must be a whole number >= 1'),
    'steps_not_a_number': C('--config.recipe.steps=abc', message=r'flag --config\.recipe\.steps=abc: invalid literal for int'),
    'budget_zero': C('--config.budget_fraction=0.0', message=r'budget_fraction must be a number in \(0, 1\.0\]'),
    'patch_too_big': C('--config.badnet.patch_size=9', message=r'patch_size 9 does not fit 8x8'),
    'position_unknown': C('--config.badnet.position=nowhere', message=r'badnet\.position is not one of: bottom_right'),
    'num_poisons_negative': C('--config.badnet.num_poisons=-3', message=r'badnet\.num_poisons must be a whole number >= 0'),
    'confused_share_zero': C('--config.ic.confused_share=0.0', message=r'ic\.confused_share must be a number in \(0, 1\.0\]'),
    'ic_class_out_of_range': C('--config.ic.class_a=12', message=r'ic\.class_a must be a class of digits: 0\.\.9'),
    'ssd_estimator_unknown': C('--config.hparams.ssd.estimator=nosuch', message=r'hparams\.ssd\.estimator=nosuch: ssd\.estimator must be one of'),
    'scrub_max_step_unknown': C('--config.hparams.scrub.max_step=nosuch', message=r'hparams\.scrub\.max_step=nosuch: max_step must be one of'),
    'hparams_unknown_method': C('--config.hparams.nosuch.x=1', message=r'hparams has no field .nosuch.; valid: .*ssd'),
    'top_level_unknown_field': C('--config.nosuch=1', message=r'config has no field .nosuch.; valid: .*seeds'),
    'wrong_type_for_field': C('--config.one_shot=maybe', message=r'flag --config\.one_shot=maybe: .*Non-boolean argument'),
    # --- potion ---------------------------------------------------------------
    'potion_size_zero': C('--config.sizes=0', message=r'sizes must be a whole number >= 1', study='potion'),
    'potion_rho_above_one': C('--config.rho_sensitivity.rhos=1.5', message=r'rho_sensitivity\.rhos must be a number in \(0, 1\.0\)', study='potion'),
    'potion_sinusoid_amplitude': C('--config.sinusoid.amplitude_fraction=-1.0', message=r'sinusoid\.amplitude_fraction must be a finite number > 0', study='potion'),
    'potion_sinusoid_frequency': C('--config.sinusoid.frequency=0.0', message=r'sinusoid\.frequency must be a finite number > 0', study='potion'),
    'potion_moving_target': C('--config.moving.target_class=11', message=r'moving\.target_class must be a class of digits', study='potion'),
    'potion_pretrain_negative': C('--config.pretrain.steps=-1', message=r'pretrain\.steps must be >= 0', study='potion'),
    'potion_pretrain_optimizer': C('--config.pretrain.steps=10', '--config.pretrain.optimizer=nosuch', message=r"pretrain\.optimizer='nosuch': must be 'sgd' or 'adamw'", study='potion'),
    'potion_timing_size_negative': C('--config.timing_size=-1', message=r'timing_size must be a whole number >= 0', study='potion'),
    'potion_method_unknown': C('--config.methods=ssd,nosuch', message=r'methods is not one of', study='potion'),
    # --- poison_fails -----------------------------------------------------------
    'fails_poison_unknown': C('--config.poisons=nosuch', message=r"Unknown manipulation 'nosuch'; valid names: .*gaussian", study='poison_fails'),
    'fails_budget_zero': C('--config.budgets=0.0', message=r'budgets must be a number in \(0, 1\.0\]', study='poison_fails'),
    'fails_noise_negative': C('--config.gaussian.noise_std_fraction=-1.0', message=r'noise_std_fraction must be a finite number > 0', study='poison_fails'),
    'fails_epsilon_negative': C('--config.gradient_matching.epsilon=-1.0', message=r'gradient_matching\.epsilon must be a finite number > 0', study='poison_fails'),
    'fails_fresh_draws_zero': C('--config.fresh_draws=0', message=r'fresh_draws must be a whole number >= 1', study='poison_fails'),
    'fails_found_fraction_zero': C('--config.found_fraction=0.0', message=r'found_fraction must be a number in \(0, 1\.0\]', study='poison_fails'),
    'fails_bound_zero': C('--config.gradient_canceling.parameter_bound=0.0', message=r'parameter_bound must be a finite number > 0', study='poison_fails'),
    'fails_gaussian_recipe_steps': C('--config.gaussian.recipe.steps=0', message=r'gaussian\.recipe\.steps=0: must be a whole number >= 1', study='poison_fails'),
    # --- reload ------------------------------------------------------------------
    'reload_scenario_unknown': C('--config.scenarios=nosuch', message=r"Unknown scenario 'nosuch'; valid names: random_10", study='reload'),
    'reload_forget_share_zero': C('--config.random_10.forget_share=0.0', message=r'random_10\.forget_share must be a number in \(0, 1\.0\)', study='reload'),
    'reload_forget_share_one': C('--config.random_30.forget_share=1.0', message=r'random_30\.forget_share must be a number in \(0, 1\.0\)', study='reload'),
    'reload_forget_class': C('--config.in_class.forget_class=10', message=r'in_class\.forget_class must be a class of digits: 0\.\.9 \(or -1', study='reload'),
    'reload_num_forget_zero': C('--config.in_class.num_forget=0', message=r'in_class\.num_forget must be a whole number >= 1', study='reload'),
    'reload_corner_unknown': C('--config.cross_pattern.corners=nowhere', message=r'cross_pattern\.corners is not one of', study='reload'),
    'reload_mia_feature_unknown': C('--config.mia_features=nosuch', message=r"Unknown MIA feature 'nosuch'; valid: .*entropy", study='reload'),
    'reload_reset_fraction': C('--config.hparams.reload.reset_fraction=1.5', message=r'reset_fraction must be in \[0, 1\)', study='reload'),
    # --- pgu ---------------------------------------------------------------------
    'pgu_part_unknown': C('--config.parts=nosuch', message=r"Unknown part 'nosuch'; valid parts: removal", study='pgu'),
    'pgu_num_forget_zero': C('--config.removal.num_forget=0', message=r'removal\.num_forget must be a whole number >= 1', study='pgu'),
    'pgu_class_out_of_range': C('--config.class_removal.forget_class=10', message=r'class_removal\.forget_class must be a class of digits', study='pgu'),
    'pgu_flip_fraction_zero': C('--config.depoison.flip_fractions=0.0', message=r'depoison\.flip_fractions must be a number in \(0, 1\.0\]', study='pgu'),
    'pgu_requests_zero': C('--config.incremental.num_requests=0', message=r'incremental\.num_requests must be a whole number >= 1', study='pgu'),
    'pgu_energy_above_one': C('--config.sweeps.pgu_depoison.energy_threshold=1.5', message=r'energy_threshold must be a number in \(0, 1\.0\]', study='pgu'),
    'pgu_method_unknown': C('--config.removal.methods=pgu,nosuch', message=r'removal\.methods is not one of', study='pgu'),
    # --- why_fails ---------------------------------------------------------------
    'why_part_unknown': C('--config.parts=nosuch', message=r"Unknown part 'nosuch' in config.parts; valid: model_shift", study='why_fails'),
    'why_beta_zero': C('--config.model_shift.betas=0.0', message=r'model_shift\.betas must be a number in \(0, 1\.0\]', study='why_fails'),
    'why_n_zero': C('--config.gradient_alignment.n=0', message=r'gradient_alignment\.n must be a whole number >= 1', study='why_fails'),
    'why_poison_unknown': C('--config.model_shift.poisons=nosuch', message=r"Unknown poison 'nosuch' in model_shift.poisons; valid: badnet", study='why_fails'),
    'why_too_many_poisons': C('--config.gradient_alignment.num_poisons=5000', message=r'gradient_alignment\.num_poisons must be at most gradient_alignment\.n \(1000\)', study='why_fails'),
    'why_seed_negative': C('--config.seeds=-1', message=r'seeds must be whole numbers >= 0', study='why_fails'),
}


SENTINEL = {'run_key': 'sentinel-row-of-an-earlier-run', 'method': 'earlier'}


def _run(name: str, case: Case, base: str):
  workdir = os.path.join(base, name)
  os.makedirs(workdir)
  row = dict(SENTINEL, study=case.study)
  results = os.path.join(workdir, 'results.jsonl')
  with open(results, 'w') as f:
    f.write(json.dumps(row) + '\n')
  before = open(results, 'rb').read()
  target = case.prepare(workdir) if case.prepare else workdir
  argv = [sys.executable, script(case.study), f'--workdir={target}']
  if case.smoke:
    argv.append(smoke(case.study))
  argv += list(case.args)
  proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                        timeout=600, env=dict(os.environ))
  os.chmod(workdir, stat.S_IRWXU)
  after = open(results, 'rb').read()
  return proc, before, after


@pytest.fixture(scope='module')
def outcomes():
  base = tempfile.mkdtemp(prefix='bad-inputs-')
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    futures = {name: pool.submit(_run, name, case, base)
               for name, case in CASES.items()}
    done = {name: future.result() for name, future in futures.items()}
  yield done
  shutil.rmtree(base, ignore_errors=True)


def test_there_are_at_least_60_cases():
  assert len(CASES) >= 60


@pytest.mark.parametrize('name', sorted(CASES))
def test_bad_input_fails_in_one_clear_line(outcomes, name):
  case = CASES[name]
  proc, before, after = outcomes[name]
  output = proc.stdout + proc.stderr
  assert proc.returncode != 0, f'exit 0 for {case.args}:\n{output[-2000:]}'
  assert 'Traceback' not in output, output[-4000:]
  errors = [line for line in proc.stderr.splitlines()
            if line.startswith('error: ')]
  assert len(errors) == 1, proc.stderr[-2000:]
  assert re.search(case.message, errors[0]), errors[0]
  assert after == before, 'the results file changed'


# --- recoveries: warn, set aside, finish -------------------------------------

def _smoke_run(study, workdir, *args):
  return subprocess.run(
      [sys.executable, script(study), f'--workdir={workdir}', smoke(study),
       '--config.methods=finetune', '--config.manipulations=badnet',
       '--config.found_fractions=1.0', '--config.one_shot=False', *args],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=dict(os.environ))


def _rows(workdir):
  with open(os.path.join(workdir, 'results.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope='module')
def finished_smoke(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('finished'))
  proc = _smoke_run('corrective', workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def _measured(row):
  skip = {'seconds', 'compile_seconds', 'setup_seconds', 'original_seconds',
          'oracle_seconds'}
  return {k: v for k, v in row.items() if 'seconds' not in k and k not in skip}


def test_a_corrupt_checkpoint_is_set_aside_and_the_model_retrained(
    finished_smoke, tmp_path):
  workdir = str(tmp_path / 'w')
  shutil.copytree(finished_smoke, workdir)
  rows = _rows(workdir)
  original = [p for p in glob.glob(os.path.join(workdir, 'checkpoints', '*'))
              if p.endswith('-original')]
  assert original, os.listdir(os.path.join(workdir, 'checkpoints'))
  # Truncate every data file of M_o's checkpoint, and drop a finished run so
  # that the rerun must read (or rebuild) it.
  for path in glob.glob(os.path.join(original[0], '**', '*'), recursive=True):
    if os.path.isfile(path) and os.path.getsize(path) > 64:
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 3)
  kept = [r for r in rows if r['method'] != 'finetune']
  with open(os.path.join(workdir, 'results.jsonl'), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in kept)
  proc = _smoke_run('corrective', workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  assert re.search(r'checkpoint .*-original cannot be read .*set aside as '
                   r'.*-original\.corrupt-', proc.stderr), proc.stderr[-3000:]
  assert glob.glob(original[0] + '.corrupt-*')
  again = {r['run_key']: r for r in _rows(workdir)}
  for row in rows:  # the retrained M_o gives the same numbers
    assert _measured(again[row['run_key']]) == _measured(row)


def test_unreadable_results_lines_are_reported_and_skipped(finished_smoke,
                                                           tmp_path):
  workdir = str(tmp_path / 'w')
  shutil.copytree(finished_smoke, workdir)
  rows = _rows(workdir)
  path = os.path.join(workdir, 'results.jsonl')
  with open(path, 'a') as f:
    f.write('{"method": "a row without a run key"}\n')
    f.write('[1, 2, 3]\n')
    f.write('{"cut off by a kill\n')
  proc = _smoke_run('corrective', workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  lines = len(rows)
  assert f'results.jsonl:{lines + 1}' in proc.stderr, proc.stderr[-3000:]
  assert f'results.jsonl:{lines + 2}' in proc.stderr
  assert f'results.jsonl:{lines + 3}' in proc.stderr
  assert os.path.exists(os.path.join(workdir, 'report.md'))


def test_a_second_study_is_refused_before_it_writes(finished_smoke):
  before = {p: open(p, 'rb').read() for p in glob.glob(
      os.path.join(finished_smoke, '*.md'))}
  proc = subprocess.run(
      [sys.executable, script('potion'), f'--workdir={finished_smoke}',
       smoke('potion')], cwd=ROOT, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 1
  assert 'holds the corrective study' in proc.stderr
  assert {p: open(p, 'rb').read() for p in before} == before
