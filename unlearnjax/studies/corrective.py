"""The corrective-unlearning benchmark (Goel et al. 2024, §3; Fig. 2, Tab. 1, Fig. 3).

For each manipulation and seed: manipulate the training data, train the
original M_o and the oracle M* (once per seed, orbax-checkpointed in the
workdir), then for every found fraction (and one-shot) and every method,
unlearn (searching the method's grid with Goel's score), measure and append
one row to `<workdir>/results.jsonl`. Finished runs are skipped on rerun.
"""

from __future__ import annotations

import dataclasses
import json
import glob
import os
import shutil
import time
import zlib

import jax
import ml_collections
import numpy as np
import tqdm

from unlearnjax import checkpoint, data, forget as forget_lib, metrics
from unlearnjax import models, training
from unlearnjax.errors import ConfigError
from unlearnjax.manipulations import get_manipulation
from unlearnjax.results import ResultsFile, run_key
from unlearnjax.selection import select_with_goel_score
from unlearnjax.unlearn import UnlearnTask, get_method
from unlearnjax.unlearn import ssd as ssd_lib

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
  for name in config.hparams:
    if name not in config.methods:
      continue
    fields = {f.name for f in dataclasses.fields(get_method(name).hparams)}
    unknown = set(config.hparams[name]) - fields
    if unknown:
      raise ConfigError(f'config.hparams.{name} has unknown fields {sorted(unknown)}; '
                        f'valid: {sorted(fields)}')


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
  train, test = data.load_dataset(
      config.dataset, data_dir=config.data_dir or None,
      download=config.download, max_train=config.max_train or None,
      max_test=config.max_test or None, seed=0, image_size=config.image_size)
  train, validation = data.carve_validation(train, config.validation_fraction,
                                            seed)
  settings = config[manipulation].to_dict()
  manipulated = get_manipulation(manipulation)(train, test, seed=seed,
                                               **settings)
  return manipulated, validation


def seed_key(seed: int, purpose: str) -> jax.Array:
  """A key derived from (seed, purpose): the same for every method."""
  return jax.random.fold_in(jax.random.key(seed), zlib.crc32(purpose.encode()))


def trained_model(workdir, name, model, recipe, train, indices, key, meta,
                  initial=None):
  """Trains once (from `initial` when given: fine-tuning) and caches in
  `<workdir>/checkpoints/<name>`; returns (variables, seconds the training
  took when it ran)."""
  path = os.path.join(workdir, 'checkpoints', name)
  like = training.init_variables(model, jax.random.key(0), train.image_shape)
  if checkpoint.exists(path):
    variables, saved = checkpoint.restore(path, like)
    return variables, saved['seconds']
  start = time.time()
  partial = path + '-partial'  # resumable while it trains (long recipes)
  variables = training.fit(model, recipe, train, key, indices=indices,
                           variables=initial, what=name, checkpoint_dir=partial,
                           checkpoint_every=max(500, recipe.steps // 10),
                           show_progress=recipe.steps >= 1000)
  seconds = time.time() - start
  if jax.process_index() == 0:
    checkpoint.save(path, variables, {**meta, 'seconds': seconds})
    shutil.rmtree(partial, ignore_errors=True)
  return variables, seconds


def method_grid(config, method_name: str, task: UnlearnTask):
  method = get_method(method_name)
  overrides = dict(config.hparams.get(method_name, {}))
  if 'budget_fraction' in {f.name for f in dataclasses.fields(method.hparams)}:
    overrides.setdefault('budget_fraction', config.budget_fraction)
  grid = method.grid(task) if config.search else [method.hparams()]
  return method, [dataclasses.replace(h, **overrides) for h in grid]


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Runs (or resumes) the study; returns the rows of this sweep."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  results = ResultsFile(os.path.join(workdir, 'results.jsonl'))
  done = results.done_keys()
  is_writer = jax.process_index() == 0
  fractions = list(config.found_fractions) + (
      [forget_lib.ONE_SHOT] if config.one_shot else [])
  total = (len(config.manipulations) * len(config.seeds)
           * (2 + len(fractions) * len(config.methods)))
  progress = tqdm.tqdm(total=total, desc='corrective', unit='run',
                       disable=not is_writer, dynamic_ncols=True)
  recipe = recipe_from_config(config)
  current = set()  # run keys of this sweep

  for manipulation_name in config.manipulations:
    base = setting(config, manipulation_name)
    setting_key = run_key(base)
    for seed in config.seeds:
      keys = _run_keys(base, config, fractions, seed)
      current.update(keys.values())
      if (set(keys.values()) <= done
          and _ratios_done(workdir, base, seed, config)):
        progress.update(len(keys))
        continue
      manipulation, validation = build_data(config, manipulation_name, seed)
      model = models.get_model(config.model, manipulation.train.num_classes,
                               **config.model_kwargs)
      common = {'manipulation': manipulation_name, 'dataset': config.dataset,
                'model': config.model, 'seed': seed,
                'n_manipulated': int(manipulation.manipulated.size),
                'setting_key': setting_key, 'study': STUDY}
      meta = {'setting': base, 'seed': seed}
      original, original_seconds = trained_model(
          workdir, f'{setting_key}-seed{seed}-original', model, recipe,
          manipulation.train, None, seed_key(seed, 'original'), meta)
      oracle, oracle_seconds = trained_model(
          workdir, f'{setting_key}-seed{seed}-oracle', model, recipe,
          manipulation.train, manipulation.clean_indices,
          seed_key(seed, 'oracle'), meta)
      reference = {
          'original': metrics.corrective_accuracies(model, original,
                                                    manipulation),
          'oracle': metrics.corrective_accuracies(model, oracle, manipulation)}
      for name, ref, seconds in (('none', 'original', original_seconds),
                                 ('oracle', 'oracle', oracle_seconds)):
        key = keys[(name, None)]
        if key not in done and is_writer:
          results.append(result_row(common, name, None, None, reference[ref],
                              reference, seconds, key, {}))
        progress.update(1)

      cache = {}  # memo (importances, M_o logits) shared by every fraction

      def make_task(forget_rows):
        return UnlearnTask(
            model=model, original=original, train=manipulation.train,
            forget=forget_rows,
            retain=forget_lib.retain_indices(len(manipulation.train),
                                             forget_rows),
            validation=validation, recipe=recipe, cache=cache)

      # Every process computes (a collective); only process 0 writes.
      _save_ratios(workdir, base, seed, make_task(manipulation.manipulated),
                   config, write=is_writer)
      for fraction in fractions:
        forget_rows = forget_lib.sample_forget(manipulation.manipulated,
                                               fraction, seed)
        task = make_task(forget_rows)
        for method_name in config.methods:
          key = keys[(method_name, fraction)]
          progress.set_postfix_str(
              f'{manipulation_name} seed={seed} f={fraction} {method_name}')
          if key in done:
            progress.update(1)
            continue
          method, grid = method_grid(config, method_name, task)
          selected, accs, seconds, extra = unlearn_and_measure(
              method_name, method, grid, task, manipulation, seed, fraction)
          if is_writer:
            results.append(result_row(common, method_name, fraction,
                                task.forget.size, accs, reference, seconds,
                                key, dataclasses.asdict(selected.hparams),
                                extra))
          progress.update(1)
  progress.close()
  # The rows of this sweep only: rows of earlier configs stay in the file but
  # do not mix into this sweep's figures.
  return [row for row in results.rows() if row['run_key'] in current]


def unlearn_and_measure(method_name, method, grid, task, manipulation, seed,
                        fraction):
  """Searches `grid` with Goel's score and measures the pick on the test data.

  Returns (Selected, corrective accuracies, wall seconds of the search, the
  row's extra fields: selection details and what the method reported).
  """
  start = time.time()
  selected = select_with_goel_score(
      method, task, seed_key(seed, f'unlearn/{method_name}/{fraction}'), grid)
  seconds = time.time() - start
  accs = metrics.corrective_accuracies(task.model, selected.variables,
                                       manipulation)
  extra = {'selection_score': selected.score,
           'validation_accuracy': selected.validation_accuracy,
           'forget_changed': selected.forget_changed,
           'num_configs_tried': selected.num_tried,
           'num_configs_diverged': selected.num_diverged,
           'seconds_per_config': seconds / selected.num_tried,
           **selected.info}
  return selected, accs, seconds, extra


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
                                     seed_key(seed, 'ssd_ratios'))
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
