"""Poison unlearning with PTN and XLF (Potion, Schoepf et al.; §4-5).

For each manipulation (BadNet, sinusoidal signal, moving trigger), each
manipulation size |S_m| and each seed: poison the training data, train (or
fine-tune, Potion §4.2) the original M_o and the oracle M* once (orbax
checkpoints in the workdir), then for every found fraction (0.1 … 1.0) and
one-shot, run every method and append one row to `<workdir>/results.jsonl`:
SSD with Goel's grid and score, PTN+SSD, PTN+LF, PTN+XLF, EU (retrain), and
the original ('none') and oracle rows. A second part reruns PTN for a grid of
ρ (Fig. 8/9). Finished runs are skipped on rerun. Importances of the training
data are computed once per original model and shared by all fractions.
Curves (`config.curves_every`): the first manipulation at the middle |S_m|,
first seed, middle found fraction (`corrective.curve_run`): every method of
the main part and M_o's training.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from unlearnjax import curves, data, forget as forget_lib, metrics, models
from unlearnjax import sweep
from unlearnjax import training
from unlearnjax.errors import ConfigError
from unlearnjax.manipulations import get_manipulation
from unlearnjax.results import run_key
from unlearnjax.studies import corrective
from unlearnjax.unlearn import UnlearnTask, get_method

STUDY = 'potion'


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks names, sizes and ranges before any work; raises ConfigError."""
  corrective.validate_config(config)
  if not config.sizes:
    raise ConfigError('config.sizes (the |S_m| values) is empty')
  for size in config.sizes:
    if not (isinstance(size, int) and size > 0):
      raise ConfigError(f'Every |S_m| size must be a positive integer; got '
                        f'{size!r} in config.sizes')
  for rho in config.rho_sensitivity.rhos:
    if not 0 <= rho <= 1:
      raise ConfigError(f'ρ {rho} in config.rho_sensitivity.rhos is outside '
                        '[0, 1]: it is the share of the original accuracy on '
                        'S_f at which PTN stops.')
  for name in config.rho_sensitivity.methods:
    if not name.startswith('ptn_'):
      raise ConfigError(f'rho_sensitivity.methods: {name!r} is not a PTN '
                        'method (ptn_ssd, ptn_lf, ptn_xlf)')
    try:
      get_method(name)
    except ValueError as e:
      raise ConfigError(str(e)) from e
  for name in config.rho_sensitivity.manipulations:
    if name not in config.manipulations:
      raise ConfigError(f'rho_sensitivity.manipulations: {name!r} is not in '
                        'config.manipulations')
  for size in config.rho_sensitivity.sizes:
    if size not in config.sizes:
      raise ConfigError(f'rho_sensitivity.sizes: {size} is not in config.sizes')


def setting(config, manipulation: str, size: int) -> dict:
  """What makes the numbers of a (manipulation, |S_m|, seed) what they are."""
  base = corrective.setting(config, manipulation)
  base.update(study=STUDY, num_poisons=size,
              pretrain=_pretrain_setting(config))
  return base


def build_data(config, manipulation: str, size: int, seed: int):
  """(clean train, Manipulation, validation) for one seed; |S_m| = size."""
  train, validation, test = data.load_from_config(config, seed)
  settings = {**config[manipulation].to_dict(), 'num_poisons': size}
  manipulated = get_manipulation(manipulation)(train, test, seed=seed,
                                               **settings)
  return train, manipulated, validation


def _pretrain_setting(config) -> dict:
  """config.pretrain without an empty `npz_path`, so the run keys of configs
  that do not set it stay what they were before the field existed."""
  pretrain = config.pretrain.to_dict()
  if not pretrain.get('npz_path'):
    pretrain.pop('npz_path', None)
  return pretrain


def _pretrained(config, workdir, model, clean_train, seed):
  """Potion §4.2 fine-tunes a pretrained model on the poisoned data. With
  `config.pretrain.npz_path` set, the start is the weights in that file
  (`models.pretrained_variables`: a ViT's AugReg .npz, fresh head for the
  task's classes, position embedding resized to the image size); otherwise
  `config.pretrain.steps > 0` pretrains on the clean training split (before
  poisoning), once per seed, and steps = 0 trains from scratch."""
  pretrain = _pretrain_setting(config)
  npz_path = pretrain.pop('npz_path', '')
  if npz_path:
    return models.pretrained_variables(
        config.model, npz_path, clean_train.num_classes,
        clean_train.images.shape[1:], sweep.seed_key(seed, 'pretrain'),
        **config.model_kwargs)
  if config.pretrain.steps <= 0:
    return None
  recipe = training.Recipe(**pretrain)
  name = 'pretrained-' + run_key({
      'dataset': config.dataset, 'image_size': config.image_size,
      'max_train': config.max_train, 'model': config.model,
      'model_kwargs': config.model_kwargs.to_dict(),
      'validation_fraction': config.validation_fraction,
      'pretrain': pretrain})[:16] + f'-seed{seed}'
  variables, _ = sweep.trained_model(workdir, name, model, recipe,
                                     clean_train, None,
                                     sweep.seed_key(seed, 'pretrain'),
                                     {'seed': seed})
  return variables


@dataclasses.dataclass
class GroupSetup(corrective.GroupSetup):
  """The corrective set-up plus the pretrained start (Potion §4.2)."""
  initial: object = None

  def task(self, forget_rows) -> UnlearnTask:
    return dataclasses.replace(super().task(forget_rows), initial=self.initial)


def plan(config: ml_collections.ConfigDict, workdir: str) -> sweep.Plan:
  """One group per (manipulation, |S_m|, seed) (sweep.py)."""
  validate_config(config)
  fractions = list(config.found_fractions) + (
      [forget_lib.ONE_SHOT] if config.one_shot else [])
  recipe = corrective.recipe_from_config(config)
  groups = [_group(config, workdir, recipe, m, size, seed, fractions)
            for m in config.manipulations for size in config.sizes
            for seed in config.seeds]
  return sweep.Plan(STUDY, groups)


def run(config: ml_collections.ConfigDict, workdir: str,
        worker: sweep.Worker | None = None) -> list[dict]:
  """Runs (or resumes) this worker's share; returns the sweep's rows."""
  return sweep.execute(plan(config, workdir), workdir, worker).rows


def _group(config, workdir, recipe, manipulation_name, size, seed,
           fractions) -> sweep.Group:
  base = setting(config, manipulation_name, size)
  setting_key = run_key(base)
  keys = _run_keys(config, base, fractions, seed)
  identity = {'study': STUDY, 'manipulation': manipulation_name,
              'dataset': config.dataset, 'model': config.model, 'seed': seed,
              'setting_key': setting_key, 'num_poisons': size}
  where = f'{manipulation_name} |S_m|={size} seed={seed}'
  curve_name, curve_fraction = corrective.curve_run(config, manipulation_name,
                                                    seed, size)

  def setup() -> GroupSetup:
    clean_train, manipulation, validation = build_data(
        config, manipulation_name, size, seed)
    model = models.get_model(config.model, manipulation.train.num_classes,
                             **config.model_kwargs)
    initial = _pretrained(config, workdir, model, clean_train, seed)
    meta = {'setting': base, 'seed': seed}
    (original, original_seconds), (oracle, oracle_seconds) = (
        corrective.original_and_oracle(
            config, workdir, STUDY, setting_key, seed, model, recipe,
            manipulation, validation, meta, curve_name, curve_fraction,
            initial))
    reference = {
        'original': metrics.corrective_accuracies(model, original,
                                                  manipulation),
        'oracle': metrics.corrective_accuracies(model, oracle, manipulation)}
    common = {key: identity[key] for key in (
        'study', 'manipulation', 'dataset', 'model', 'seed', 'setting_key')}
    common['n_manipulated'] = int(manipulation.manipulated.size)
    return GroupSetup(manipulation, validation, model, original, oracle,
                  {'none': original_seconds, 'oracle': oracle_seconds},
                  reference, common, {}, recipe, initial)

  def reference_run(name, ref):
    key = keys[('main', name, None, None)]
    def measure(s: GroupSetup):
      return _row(s.common, 'main', name, None, None, s.reference[ref],
                  s.reference, s.seconds[name], key, {})
    return sweep.Run(key, f'{where} {name}', measure,
                     {**identity, 'part': 'main', 'method': name})

  def method_run(part, method_name, fraction, rho):
    key = keys[(part, method_name, fraction, rho)]
    def measure(s: GroupSetup):
      task = s.task(forget_lib.sample_forget(s.manipulation.manipulated,
                                             fraction, seed))
      method, grid = corrective.method_grid(config, method_name, task)
      if rho is not None:
        grid = [dataclasses.replace(h, over_forgetting_buffer=rho)
                for h in grid]
      selected, accs, timing, extra = corrective.unlearn_and_measure(
          method_name, method, grid, task, s.manipulation, seed, fraction,
          curves.method_recorder(
              config, workdir, STUDY, curve_name if (
                  part == 'main' and fraction == curve_fraction) else None,
              method_name))
      extra['compile_seconds'] = timing.compile_seconds
      if rho is not None:
        extra['rho'] = rho
      return _row(s.common, part, method_name, fraction, task.forget.size,
                  accs, s.reference, timing.seconds, key,
                  dataclasses.asdict(selected.hparams), extra)
    one_shot = fraction == forget_lib.ONE_SHOT
    return sweep.Run(
        key, f'{where} f={fraction} {method_name}'
        + (f' ρ={rho}' if rho is not None else ''), measure,
        {**identity, 'part': part, 'method': method_name, 'rho': rho,
         'one_shot': one_shot,
         'found_fraction': None if one_shot else fraction})

  runs = [reference_run('none', 'original'), reference_run('oracle', 'oracle')]
  for fraction in fractions:
    runs += [method_run('main', name, fraction, None)
             for name in config.methods]
    if (manipulation_name in config.rho_sensitivity.manipulations
        and size in config.rho_sensitivity.sizes
        and fraction != forget_lib.ONE_SHOT):
      runs += [method_run('rho', name, fraction, rho)
               for name in config.rho_sensitivity.methods
               for rho in config.rho_sensitivity.rhos]
  return sweep.Group(where, setup, runs)


def _run_keys(config, base, fractions, seed) -> dict:
  """(part, method, fraction, ρ) -> run key, for every run of one setting."""
  keys = {}
  for name in ('none', 'oracle'):
    keys[('main', name, None, None)] = run_key({**base, 'method': name,
                                                'seed': seed})

  def key(part, method, fraction, rho):
    overrides = config.hparams.get(method, {})
    return run_key({
        **base, 'part': part, 'method': method, 'seed': seed,
        'found_fraction': fraction, 'search': config.search, 'rho': rho,
        'budget_fraction': config.budget_fraction,
        'hparams': overrides and overrides.to_dict()})

  for fraction in fractions:
    for method in config.methods:
      keys[('main', method, fraction, None)] = key('main', method, fraction,
                                                   None)
    if (base['manipulation'] in config.rho_sensitivity.manipulations
        and base['num_poisons'] in config.rho_sensitivity.sizes
        and fraction != forget_lib.ONE_SHOT):
      for method in config.rho_sensitivity.methods:
        for rho in config.rho_sensitivity.rhos:
          keys[('rho', method, fraction, rho)] = key('rho', method, fraction,
                                                     rho)
  return keys


def _row(common, part, method, fraction, n_forget, accs, reference, seconds,
         key, hparams, extra=None) -> dict:
  row = corrective.result_row(common, method, fraction, n_forget, accs,
                              reference, seconds, key, hparams, extra)
  row['part'] = part
  return row
