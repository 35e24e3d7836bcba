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
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import tqdm

from unlearnjax import data, forget as forget_lib, metrics, models, training
from unlearnjax.errors import ConfigError
from unlearnjax.manipulations import get_manipulation
from unlearnjax.results import ResultsFile, run_key
from unlearnjax.studies import corrective
from unlearnjax.studies.corrective import seed_key, trained_model
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
              pretrain=config.pretrain.to_dict())
  return base


def build_data(config, manipulation: str, size: int, seed: int):
  """(clean train, Manipulation, validation) for one seed; |S_m| = size."""
  train, test = data.load_dataset(
      config.dataset, data_dir=config.data_dir or None,
      download=config.download, max_train=config.max_train or None,
      max_test=config.max_test or None, seed=0, image_size=config.image_size)
  train, validation = data.carve_validation(train, config.validation_fraction,
                                            seed)
  settings = {**config[manipulation].to_dict(), 'num_poisons': size}
  manipulated = get_manipulation(manipulation)(train, test, seed=seed,
                                               **settings)
  return train, manipulated, validation


def _pretrained(config, workdir, model, clean_train, seed):
  """Potion §4.2 fine-tunes a pretrained model on the poisoned data. Offline
  there are no downloaded weights: `config.pretrain.steps > 0` pretrains on
  the clean training split (before poisoning), once per seed."""
  if config.pretrain.steps <= 0:
    return None
  recipe = training.Recipe(**config.pretrain.to_dict())
  name = 'pretrained-' + run_key({
      'dataset': config.dataset, 'image_size': config.image_size,
      'max_train': config.max_train, 'model': config.model,
      'model_kwargs': config.model_kwargs.to_dict(),
      'validation_fraction': config.validation_fraction,
      'pretrain': config.pretrain.to_dict()})[:16] + f'-seed{seed}'
  variables, _ = trained_model(workdir, name, model, recipe, clean_train, None,
                               seed_key(seed, 'pretrain'), {'seed': seed})
  return variables


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Runs (or resumes) the study; returns the rows of this sweep."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  results = ResultsFile(os.path.join(workdir, 'results.jsonl'))
  done = results.done_keys()
  is_writer = jax.process_index() == 0
  fractions = list(config.found_fractions) + (
      [forget_lib.ONE_SHOT] if config.one_shot else [])
  recipe = corrective.recipe_from_config(config)
  plan = [(m, size, seed) for m in config.manipulations for size in config.sizes
          for seed in config.seeds]
  keys_of = {p: _run_keys(config, setting(config, p[0], p[1]), fractions,
                          p[2]) for p in plan}
  progress = tqdm.tqdm(total=sum(len(k) for k in keys_of.values()),
                       desc='potion', unit='run', disable=not is_writer,
                       dynamic_ncols=True)
  current = set()

  for manipulation_name, size, seed in plan:
    base = setting(config, manipulation_name, size)
    setting_key = run_key(base)
    keys = keys_of[(manipulation_name, size, seed)]
    current.update(keys.values())
    if set(keys.values()) <= done:
      progress.update(len(keys))
      continue
    clean_train, manipulation, validation = build_data(
        config, manipulation_name, size, seed)
    model = models.get_model(config.model, manipulation.train.num_classes,
                             **config.model_kwargs)
    initial = _pretrained(config, workdir, model, clean_train, seed)
    common = {'manipulation': manipulation_name, 'dataset': config.dataset,
              'model': config.model, 'seed': seed,
              'n_manipulated': int(manipulation.manipulated.size),
              'setting_key': setting_key, 'study': STUDY}
    meta = {'setting': base, 'seed': seed}
    progress.set_postfix_str(f'{manipulation_name} |S_m|={size} seed={seed} '
                             'training M_o, M*')
    original, original_seconds = trained_model(
        workdir, f'{setting_key}-seed{seed}-original', model, recipe,
        manipulation.train, None, seed_key(seed, 'original'), meta, initial)
    oracle, oracle_seconds = trained_model(
        workdir, f'{setting_key}-seed{seed}-oracle', model, recipe,
        manipulation.train, manipulation.clean_indices,
        seed_key(seed, 'oracle'), meta, initial)
    reference = {
        'original': metrics.corrective_accuracies(model, original,
                                                  manipulation),
        'oracle': metrics.corrective_accuracies(model, oracle, manipulation)}
    for name, ref, seconds in (('none', 'original', original_seconds),
                               ('oracle', 'oracle', oracle_seconds)):
      key = keys[('main', name, None, None)]
      if key not in done and is_writer:
        results.append(_row(common, 'main', name, None, None, reference[ref],
                            reference, seconds, key, {}))
      progress.update(1)

    cache = {}  # I_D, I_f and M_o's predictions, shared by every fraction

    def make_task(forget_rows):
      return UnlearnTask(
          model=model, original=original, train=manipulation.train,
          forget=forget_rows,
          retain=forget_lib.retain_indices(len(manipulation.train),
                                           forget_rows),
          validation=validation, recipe=recipe, cache=cache, initial=initial)

    for fraction in fractions:
      task = make_task(forget_lib.sample_forget(manipulation.manipulated,
                                                fraction, seed))
      runs = [('main', name, None) for name in config.methods]
      if (manipulation_name in config.rho_sensitivity.manipulations
          and size in config.rho_sensitivity.sizes
          and fraction != forget_lib.ONE_SHOT):
        runs += [('rho', name, rho) for name in config.rho_sensitivity.methods
                 for rho in config.rho_sensitivity.rhos]
      for part, method_name, rho in runs:
        key = keys[(part, method_name, fraction, rho)]
        progress.set_postfix_str(f'{manipulation_name} |S_m|={size} '
                                 f'seed={seed} f={fraction} {method_name}'
                                 + (f' ρ={rho}' if rho is not None else ''))
        if key in done:
          progress.update(1)
          continue
        method, grid = corrective.method_grid(config, method_name, task)
        if rho is not None:
          grid = [dataclasses.replace(h, over_forgetting_buffer=rho)
                  for h in grid]
        selected, accs, seconds, extra = corrective.unlearn_and_measure(
            method_name, method, grid, task, manipulation, seed, fraction)
        if rho is not None:
          extra['rho'] = rho
        if is_writer:
          results.append(_row(common, part, method_name, fraction,
                              task.forget.size, accs, reference, seconds, key,
                              dataclasses.asdict(selected.hparams), extra))
        progress.update(1)
  progress.close()
  return [row for row in results.rows() if row['run_key'] in current]


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
