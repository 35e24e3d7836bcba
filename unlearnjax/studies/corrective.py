"""The corrective-unlearning benchmark (Goel et al. 2024, §3; Fig. 2, Tab. 1, Fig. 3).

For each manipulation and seed: manipulate the training data, train the
original M_o and the oracle M* (once per seed, orbax-checkpointed in the
workdir), then for every found fraction (and one-shot) and every method,
unlearn (searching the method's grid with Goel's score), measure and append
one row to `<workdir>/results.jsonl`. Finished runs are skipped on rerun.

Curves (`unlearnjax.curves`, `config.curves_every`): the first manipulation's
first seed at the middle found fraction (`curve_run`): every method's
unlearning and M_o's training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import glob
import os

import jax
import ml_collections
import numpy as np

from unlearnjax import curves, data, forget as forget_lib, metrics
from unlearnjax import models, sweep, training
from unlearnjax.errors import ConfigError
from unlearnjax.expansion import calibrate as expansion_calibrate
from unlearnjax.manipulations import get_manipulation
from unlearnjax.results import run_key
from unlearnjax.selection import select_with_goel_score
from unlearnjax.unlearn import UnlearnTask, get_method
from unlearnjax.unlearn import ssd as ssd_lib
from unlearnjax.unlearn.registry import changed_fields, check_all_overrides

STUDY = 'corrective'


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks names and ranges before any work; raises ConfigError."""
  try:
    data.check_dataset(config.dataset)
    models.get_model(config.model, 10, **config.model_kwargs)
    for name in config.manipulations:
      get_manipulation(name)
    for name in config.methods:
      get_method(name)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  if not config.manipulations:
    raise ConfigError('config.manipulations is empty')
  if not config.methods:
    raise ConfigError('config.methods is empty')
  for fraction in config.found_fractions:
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
      raise ConfigError(
          f'found_fraction {fraction!r} is outside (0, 1]: it is the share of '
          'the manipulated samples S_m that were identified. Use '
          '--config.one_shot=True for a single identified sample.')
  if not config.found_fractions and not config.one_shot:
    raise ConfigError('No found fractions and one_shot=False: nothing to run.')
  if not config.seeds:
    raise ConfigError('config.seeds is empty')
  check_hparams(config)


def check_hparams(config) -> None:
  """Every `config.hparams.<method>` names a registered method and only its
  fields; raises ConfigError with the valid names."""
  try:
    check_all_overrides(config.hparams)
  except ValueError as e:
    raise ConfigError(str(e)) from e


def recipe_from_config(config) -> training.Recipe:
  return training.Recipe(**config.recipe.to_dict())


def setting(config, manipulation: str) -> dict:
  """What makes the numbers of a (manipulation, seed) what they are."""
  return {
      'study': STUDY, 'dataset': config.dataset, 'image_size': config.image_size,
      'max_train': config.max_train, 'max_test': config.max_test,
      'validation_fraction': config.validation_fraction,
      'model': config.model, 'model_kwargs': config.model_kwargs.to_dict(),
      'recipe': config.recipe.to_dict(), 'manipulation': manipulation,
      'manipulation_settings': config[manipulation].to_dict(),
  }


def build_data(config, manipulation: str, seed: int):
  """(Manipulation, validation split) for one seed."""
  train, validation, test = data.load_from_config(config, seed)
  settings = config[manipulation].to_dict()
  manipulated = get_manipulation(manipulation)(train, test, seed=seed,
                                               **settings)
  return manipulated, validation


def method_grid(config, method_name: str, task: UnlearnTask):
  """(method, the hparams to search): the method's grid (or its defaults
  without `config.search`), with the fields `config.hparams.<method>`
  changes from the defaults pinned, and the study's budget for methods that
  take one."""
  method = get_method(method_name)
  overrides = (changed_fields(method_name, config.hparams[method_name])
               if method_name in config.hparams else {})
  if method.takes_budget:
    overrides.setdefault('budget_fraction', config.budget_fraction)
  grid = method.grid(task) if config.search else [method.hparams()]
  return method, [dataclasses.replace(h, **overrides) for h in grid]


@dataclasses.dataclass
class GroupSetup:
  """What every run of one (manipulation, seed) shares."""
  manipulation: object
  validation: object
  model: object
  original: object
  oracle: object
  seconds: dict
  reference: dict
  common: dict
  cache: dict
  recipe: training.Recipe

  def task(self, forget_rows) -> UnlearnTask:
    return UnlearnTask(
        model=self.model, original=self.original,
        train=self.manipulation.train, forget=forget_rows,
        retain=forget_lib.retain_indices(len(self.manipulation.train),
                                         forget_rows),
        validation=self.validation, recipe=self.recipe, cache=self.cache)


def plan(config: ml_collections.ConfigDict, workdir: str) -> sweep.Plan:
  """The study's runs: one group per (manipulation, seed) (sweep.py)."""
  validate_config(config)
  fractions = list(config.found_fractions) + (
      [forget_lib.ONE_SHOT] if config.one_shot else [])
  recipe = recipe_from_config(config)
  groups = []
  for manipulation_name in config.manipulations:
    base = setting(config, manipulation_name)
    for seed in config.seeds:
      groups.append(_group(config, workdir, recipe, base, seed, fractions))
  return sweep.Plan(STUDY, groups)


def run(config: ml_collections.ConfigDict, workdir: str,
        worker: sweep.Worker | None = None) -> list[dict]:
  """Runs (or resumes) this worker's share; returns the sweep's rows."""
  return sweep.execute(plan(config, workdir), workdir, worker).rows


def curve_run(config, manipulation: str, seed: int, size=None
              ) -> tuple[str | None, object]:
  """(name, found fraction) of the run whose curves a group records, or
  (None, None): the first manipulation's first seed (at the middle |S_m| of
  `config.sizes` when `size` is given: Potion) at the middle found fraction
  (one-shot when there is none)."""
  if (manipulation != config.manipulations[0] or seed != config.seeds[0]
      or not curves.every(config)
      or (size is not None and size != curves.middle(config.sizes))):
    return None, None
  fraction = curves.middle(config.found_fractions) or forget_lib.ONE_SHOT
  where = manipulation + (f'-n{size}' if size is not None else '')
  return f'{where}-seed{seed}-f{fraction}', fraction


def original_and_oracle(config, workdir, study, setting_key, seed, model,
                        recipe, manipulation, validation, meta, curve_name,
                        curve_fraction, initial=None):
  """`sweep.original_and_oracle`, with M_o's training curve recorded when
  this group holds the study's curve run (`curve_run`; on that run's S_f)."""
  forget_rows = (forget_lib.sample_forget(manipulation.manipulated,
                                          curve_fraction, seed)
                 if curve_name else None)
  with curves.original_recording(config, workdir, study, curve_name, model,
                                 manipulation.train, forget_rows,
                                 validation) as curve:
    return sweep.original_and_oracle(workdir, setting_key, seed, model,
                                     recipe, manipulation, meta, initial,
                                     original_curve=curve)


def _group(config, workdir, recipe, base, seed, fractions) -> sweep.Group:
  manipulation_name = base['manipulation']
  curve_name, curve_fraction = curve_run(config, manipulation_name, seed)
  setting_key = run_key(base)
  keys = _run_keys(base, config, fractions, seed)
  identity = {'study': STUDY, 'manipulation': manipulation_name,
              'dataset': config.dataset, 'model': config.model, 'seed': seed,
              'setting_key': setting_key}

  def setup() -> GroupSetup:
    manipulation, validation = build_data(config, manipulation_name, seed)
    model = models.get_model(config.model, manipulation.train.num_classes,
                             **config.model_kwargs)
    meta = {'setting': base, 'seed': seed}
    (original, original_seconds), (oracle, oracle_seconds) = (
        original_and_oracle(config, workdir, STUDY, setting_key, seed, model,
                            recipe, manipulation, validation, meta,
                            curve_name, curve_fraction))
    reference = {
        'original': metrics.corrective_accuracies(model, original,
                                                  manipulation),
        'oracle': metrics.corrective_accuracies(model, oracle, manipulation)}
    common = {**identity,
              'n_manipulated': int(manipulation.manipulated.size)}
    return GroupSetup(manipulation, validation, model, original, oracle,
                  {'none': original_seconds, 'oracle': oracle_seconds},
                  reference, common, {}, recipe)

  def reference_run(name, ref):
    def measure(s: GroupSetup):
      return result_row(s.common, name, None, None, s.reference[ref],
                        s.reference, s.seconds[name], keys[(name, None)], {})
    return sweep.Run(keys[(name, None)], f'{manipulation_name} seed={seed} '
                     f'{name}', measure, {**identity, 'method': name})

  def ratios_run():
    def measure(s: GroupSetup):
      # Every process computes (a collective); only process 0 writes.
      _save_ratios(workdir, base, seed, s.task(s.manipulation.manipulated),
                   config, write=jax.process_index() == 0)
    return sweep.Run(_ratios_path(workdir, base, seed, config),
                     f'{manipulation_name} seed={seed} Fig. 3 ratios', measure,
                     record=False,
                     done=lambda: _ratios_done(workdir, base, seed, config))

  def method_run(method_name, fraction):
    def measure(s: GroupSetup):
      forget_rows = forget_lib.sample_forget(s.manipulation.manipulated,
                                             fraction, seed)
      task = s.task(forget_rows)
      method, grid = method_grid(config, method_name, task)
      selected, accs, timing, extra = unlearn_and_measure(
          method_name, method, grid, task, s.manipulation, seed, fraction,
          curves.method_recorder(
              config, workdir, STUDY,
              curve_name if fraction == curve_fraction else None,
              method_name))
      return result_row(s.common, method_name, fraction, task.forget.size,
                        accs, s.reference, timing.seconds,
                        keys[(method_name, fraction)],
                        dataclasses.asdict(selected.hparams),
                        {**extra, 'compile_seconds': timing.compile_seconds})
    one_shot = fraction == forget_lib.ONE_SHOT
    return sweep.Run(
        keys[(method_name, fraction)],
        f'{manipulation_name} seed={seed} f={fraction} {method_name}', measure,
        {**identity, 'method': method_name, 'one_shot': one_shot,
         'found_fraction': None if one_shot else fraction})

  runs = [reference_run('none', 'original'), reference_run('oracle', 'oracle'),
          ratios_run()]
  runs += [method_run(m, f) for f in fractions for m in config.methods]
  return sweep.Group(f'{manipulation_name} seed={seed}', setup, runs)


def unlearn_and_measure(method_name, method, grid, task, manipulation, seed,
                        fraction, curve=curves.no_curve):
  """Searches `grid` with Goel's score and measures the pick on the test data.

  `curve` (`curves.method_recorder`) records the run: the one configuration
  of a single-element grid as it runs, else the selected one replayed after
  the search, untimed (the same key gives the same steps).

  Returns (Selected, corrective accuracies, the search's `sweep.Timing`
  (seconds without compilation nor curve points, compile seconds apart), the
  row's extra fields: selection details and what the method reported).
  """
  key = sweep.seed_key(seed, f'unlearn/{method_name}/{fraction}')
  single = len(grid) == 1
  with (curve(task) if single else contextlib.nullcontext(task)) as run_task:
    with sweep.timed() as timing:
      selected = select_with_goel_score(method, run_task, key, grid)
      jax.block_until_ready(selected.variables)
  if not single:
    with curve(task) as replay_task:
      if replay_task is not task:  # a curve is recorded
        method.unlearn(replay_task, selected.hparams, key)
  accs = metrics.corrective_accuracies(task.model, selected.variables,
                                       manipulation)
  extra = {'selection_score': selected.score,
           'validation_accuracy': selected.validation_accuracy,
           'forget_changed': selected.forget_changed,
           'num_configs_tried': selected.num_tried,
           'num_configs_diverged': selected.num_diverged,
           'seconds_per_config': timing.seconds / selected.num_tried,
           **selected.info}
  if 'expanded_forget_rows' in extra:  # expand-then-correct (issue 12)
    extra.update(expansion_calibrate.quality(
        extra.pop('expanded_forget_rows'), task.forget,
        manipulation.manipulated))
  return selected, accs, timing, extra


def _run_keys(base, config, fractions, seed) -> dict:
  keys = {}
  for name in ('none', 'oracle'):
    keys[(name, None)] = run_key({**base, 'method': name, 'seed': seed})
  for fraction in fractions:
    for method in config.methods:
      keys[(method, fraction)] = run_key({
          **base, 'method': method, 'seed': seed, 'found_fraction': fraction,
          'search': config.search, 'budget_fraction': config.budget_fraction,
          'hparams': config.hparams.get(method, {}) and
                     config.hparams[method].to_dict()})
  return keys


def _ssd_hparams(config) -> ssd_lib.SSDHparams:
  return dataclasses.replace(ssd_lib.SSDHparams(),
                             **dict(config.hparams.get('ssd', {})))


def _ratios_path(workdir, base, seed, config) -> str:
  """`<manipulation>-<setting_key>-<ssd settings key>-seed<seed>.npz`."""
  ssd_key = run_key(dataclasses.asdict(_ssd_hparams(config)))[:8]
  return os.path.join(
      workdir, 'ssd_ratios',
      f'{base["manipulation"]}-{run_key(base)}-{ssd_key}-seed{seed}.npz')


def _ratios_done(workdir, base, seed, config) -> bool:
  return os.path.exists(_ratios_path(workdir, base, seed, config))


def _save_ratios(workdir, base, seed, task, config, write: bool) -> None:
  """Goel Fig. 3: SSD importance ratios I_f/I_D with S_f = S_m.

  Replaces the file an earlier SSD setting wrote for the same (setting, seed).
  """
  path = _ratios_path(workdir, base, seed, config)
  if os.path.exists(path):
    return
  hparams = _ssd_hparams(config)
  ratios = ssd_lib.importance_ratios(task, hparams,
                                     sweep.seed_key(seed, 'ssd_ratios'))
  if not write:
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  stale = f'{base["manipulation"]}-{run_key(base)}-*-seed{seed}.npz'
  for old in glob.glob(os.path.join(os.path.dirname(path), stale)):
    os.remove(old)
  tmp = path + '.tmp.npz'
  np.savez_compressed(tmp, ratios=ratios.astype(np.float32),
                      setting_key=run_key(base),
                      manipulation=base['manipulation'], seed=seed,
                      estimator=hparams.estimator,
                      importance_data=hparams.importance_data,
                      n_train=len(task.train), n_forget=task.forget.size)
  os.replace(tmp, path)


def result_row(common, method, fraction, n_forget, accs, reference, seconds, key,
         hparams, extra=None) -> dict:
  one_shot = fraction == forget_lib.ONE_SHOT
  row = {
      **common, 'method': method,
      'found_fraction': None if one_shot else fraction,
      'one_shot': one_shot, 'n_forget': n_forget, 'hparams': hparams,
      **accs,
      'poison_healed': metrics.poison_healed(accs['acc_corr'],
                                             reference['oracle']['acc_corr']),
      'model_damage': metrics.model_damage(accs['acc_retain'],
                                           reference['original']['acc_retain']),
      'original_acc_corr': reference['original']['acc_corr'],
      'oracle_acc_corr': reference['oracle']['acc_corr'],
      'seconds': seconds, 'run_key': key,
  }
  row.update(extra or {})
  return json.loads(json.dumps(row, default=float))
