"""The PGU evaluation (Hoang et al. 2024, §4) at the scale of the data set.

Four parts, each one function in `PARTS` (a new part is one function and one
line), run for every seed on the same data and original model M_o:

- `removal` (§4.2, Table 1, Figs. 1-2): forget a random set of training
  samples (`num_forget`; `from_class` ≥ 0 draws them from one class, as the
  paper's "500 samples of Class 0").
- `class_removal` (§4.3, Table 2, Figs. 3-4): forget every training sample of
  `forget_class`; also measured with that class's logit removed (the paper
  removes its row of the last layer before evaluating).
- `incremental` (§4.4, Table 3, Figs. 5-6): `num_requests` class-balanced
  requests of `request_size` samples, served one after another: PGU through
  its incremental cache (`pgu.start_incremental` / `unlearn_request`),
  retraining from scratch on what is left after each request, and any other
  method chained from its own previous result.
- `depoison` (§4.5, Table 4): pairwise label flips (`label_flip`) at each
  `flip_fractions` budget; the poisoned M_o and the clean M* (trained
  without the flipped samples) are the references, every flipped sample is
  handed over.

Read-outs (§4.1): accuracy on forget, retain and test; PGU's membership
attack (`metrics.mia.fit_output_attack`: a classifier on the forget outputs
of `mia_models` models trained with and as many trained without the forget
set; its ROC/AUC on the evaluated model's forget outputs against
`mia_reference_models` held-out models trained without it, 0.5 =
indistinguishable from retraining); the histogram of the log-entropy of the
outputs on forget (Figs. 1, 3, 5); wall seconds.

One row per finished run in `<workdir>/results.jsonl` (reruns skip them);
every trained reference and shadow model is an orbax checkpoint under
`<workdir>/checkpoints/`, shared by the parts that need the same one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import Callable

import jax
import ml_collections
import numpy as np
import tqdm

from unlearnjax import data, models, training
from unlearnjax.data.split import Split
from unlearnjax.errors import ConfigError
from unlearnjax.manipulations import label_flip
from unlearnjax.manipulations.base import host_rng
from unlearnjax.metrics import mia
from unlearnjax.results import ResultsFile, run_key
from unlearnjax.sweep import seed_key, trained_model
from unlearnjax.unlearn import UnlearnTask, get_method
from unlearnjax.unlearn import pgu as pgu_lib
from unlearnjax.unlearn.base import as_unlearned

STUDY = 'pgu'
# Part settings that list what to sweep: they are not part of a run's key,
# so adding a method or a budget runs only the new runs.
SWEEP_FIELDS = ('methods', 'flip_fractions')
CLASS_PAIRS = {'random': 'random', 'digits': label_flip.DIGITS_PAIRS,
               'cifar10': label_flip.CIFAR10_PAIRS}
STOP_REFERENCES = ('chance', 'validation')
ROC_FPR = np.linspace(0.0, 1.0, 51)     # the stored ROC's FPR grid
ENTROPY_BINS = 24                       # log-entropy histogram on forget
ENTROPY_FLOOR = 1e-6


# ----------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------


def _part_methods(config, part: str) -> tuple[str, ...]:
  return tuple(config[part].methods)


def _check_range(part, name, value, low):
  if not isinstance(value, int) or value < low:
    raise ConfigError(f'config.{part}.{name} = {value!r} must be an integer '
                      f'>= {low}')


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks names and ranges before any work; raises ConfigError."""
  try:
    data.check_dataset(config.dataset)
    models.get_model(config.model, 10, **config.model_kwargs)
    for part in config.parts:
      if part not in PARTS:
        raise ValueError(f'Unknown part {part!r}; valid parts: '
                         f'{", ".join(PARTS)}.')
      if part not in config:
        raise ValueError(f'config.{part} (the settings of part {part!r}) is '
                         'missing')
      for name in _part_methods(config, part):
        get_method(name)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  if not config.parts:
    raise ConfigError('config.parts is empty; valid parts: '
                      f'{", ".join(PARTS)}')
  if not config.seeds:
    raise ConfigError('config.seeds is empty')
  for part in config.parts:
    settings = config[part]
    if not settings.methods:
      raise ConfigError(f'config.{part}.methods is empty')
    if 'mia_models' in settings:
      _check_range(part, 'mia_models', settings.mia_models, 0)
      if settings.mia_models:
        _check_range(part, 'mia_reference_models',
                     settings.mia_reference_models, 1)
  if 'removal' in config.parts:
    _check_range('removal', 'num_forget', config.removal.num_forget, 1)
    _check_range('removal', 'from_class', config.removal.from_class, -1)
  if 'class_removal' in config.parts:
    _check_range('class_removal', 'forget_class',
                 config.class_removal.forget_class, 0)
    if config.class_removal.stop_reference not in STOP_REFERENCES:
      raise ConfigError(
          f'config.class_removal.stop_reference = '
          f'{config.class_removal.stop_reference!r}; valid: '
          f'{", ".join(STOP_REFERENCES)}')
  if 'incremental' in config.parts:
    _check_range('incremental', 'num_requests',
                 config.incremental.num_requests, 1)
    _check_range('incremental', 'request_size',
                 config.incremental.request_size, 1)
  if 'depoison' in config.parts:
    if not config.depoison.flip_fractions:
      raise ConfigError('config.depoison.flip_fractions is empty (the shares '
                        'of each paired class flipped, the paper: 0.1 … 0.5)')
    for fraction in config.depoison.flip_fractions:
      if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ConfigError(f'flip fraction {fraction!r} is outside (0, 1]: it '
                          'is the share of each paired class flipped (the '
                          'paper: 0.1 … 0.5).')
    if config.depoison.class_pairs not in CLASS_PAIRS:
      raise ConfigError(f'config.depoison.class_pairs = '
                        f'{config.depoison.class_pairs!r}; valid: '
                        f'{", ".join(CLASS_PAIRS)}')
  methods = {m for part in config.parts for m in _part_methods(config, part)}
  for table in ('hparams', 'sweeps'):
    for name in config[table]:
      if name not in methods:
        continue
      fields = {f.name for f in dataclasses.fields(get_method(name).hparams)}
      unknown = set(config[table][name]) - fields
      if unknown:
        raise ConfigError(f'config.{table}.{name} has unknown fields '
                          f'{sorted(unknown)}; valid: {sorted(fields)}')
  for name in config.sweeps:
    if len(config.sweeps[name]) > 1:
      raise ConfigError(f'config.sweeps.{name}: sweep one field per method '
                        f'(got {sorted(config.sweeps[name])})')
    for field, values in config.sweeps[name].items():
      if not isinstance(values, (tuple, list)) or not values:
        raise ConfigError(f'config.sweeps.{name}.{field} must be a non-empty '
                          f'tuple of values, got {values!r}')
  for name in methods:
    for _, hparams in method_variants(config, name):
      try:
        if hasattr(hparams, 'resolved'):
          hparams.resolved()
      except ValueError as e:
        raise ConfigError(f'{name}: {e}') from e


def setting(config) -> dict:
  """What makes every model of a seed what it is (data, model, recipe)."""
  return {
      'study': STUDY, 'dataset': config.dataset,
      'image_size': config.image_size, 'max_train': config.max_train,
      'max_test': config.max_test,
      'validation_fraction': config.validation_fraction,
      'model': config.model, 'model_kwargs': config.model_kwargs.to_dict(),
      'recipe': config.recipe.to_dict(),
  }


def method_variants(config, name: str) -> list[tuple[str | None, object]]:
  """[(variant label or None, hparams)]: one per value of the method's sweep
  (`config.sweeps.<method>.<field>`), on top of `config.hparams.<method>`."""
  method = get_method(name)
  base = dict(config.hparams.get(name, {}))
  sweep = config.sweeps.get(name, {})
  if not sweep:
    return [(None, dataclasses.replace(method.hparams(), **base))]
  (field, values), = sweep.items()
  return [(f'{field}={value}',
           dataclasses.replace(method.hparams(), **{**base, field: value}))
          for value in values]


def _is_pgu(name: str) -> bool:
  return get_method(name).unlearn is pgu_lib.unlearn


def _digest(*parts) -> str:
  blob = b''.join(np.asarray(p).tobytes() if isinstance(p, np.ndarray)
                  else repr(p).encode() for p in parts)
  return hashlib.sha1(blob).hexdigest()[:12]


# ----------------------------------------------------------------------------
# One seed: data, M_o, run keys, rows
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class SeedRun:
  """What every part of one seed shares; parts record rows through it."""
  config: ml_collections.ConfigDict
  workdir: str
  seed: int
  results: ResultsFile
  done: set
  current: set
  train: Split
  validation: Split
  test: Split
  model: object
  recipe: training.Recipe
  base: dict
  setting_key: str
  is_writer: bool

  def key(self, part: str, method: str, variant: str | None = None,
          **identity) -> str:
    """The run key of one row; every key asked for belongs to this sweep."""
    settings = {k: v for k, v in self.config[part].to_dict().items()
                if k not in SWEEP_FIELDS}
    hparams = {}
    if method not in ('none', 'oracle'):
      hparams = dict(self.config.hparams.get(method, {}))
    key = run_key({**self.base, 'part': part, 'part_settings': settings,
                   'method': method, 'variant': variant, 'hparams': hparams,
                   'seed': self.seed, **identity})
    self.current.add(key)
    return key

  def record(self, key: str, part: str, method: str, row: dict) -> None:
    if key in self.done or not self.is_writer:
      return
    self.results.append({
        'study': STUDY, 'part': part, 'method': method,
        'dataset': self.config.dataset, 'model': self.config.model,
        'seed': self.seed, 'setting_key': self.setting_key, **row,
        'run_key': key})
    self.done.add(key)

  def trained(self, name: str, split: Split, indices, purpose: str):
    """(variables, seconds) of a model trained with the recipe on
    split[indices], orbax-cached under `<setting>-seed<seed>-<name>`."""
    return trained_model(
        self.workdir, f'{self.setting_key}-seed{self.seed}-{name}', self.model,
        self.recipe, split, indices, seed_key(self.seed, purpose),
        {'setting': self.base, 'seed': self.seed, 'purpose': purpose})

  def original(self):
    """M_o on the whole training set (shared by the removal parts)."""
    return self.trained('original', self.train, None, 'original')

  def logits(self, variables, images) -> np.ndarray:
    return training.predict_logits(self.model, variables, images,
                                   self.recipe.eval_batch_size)

  def accuracy(self, variables, split: Split) -> float:
    return training.accuracy(self.model, variables, split,
                             self.recipe.eval_batch_size)

  def task(self, original, train: Split, forget, retain, validation=None
           ) -> UnlearnTask:
    return UnlearnTask(model=self.model, original=original, train=train,
                       forget=forget, retain=retain,
                       validation=self.validation if validation is None
                       else validation,
                       recipe=self.recipe, cache={})


def load_seed(config, workdir, seed, results, done, current) -> SeedRun:
  train, test = data.load_dataset(
      config.dataset, data_dir=config.data_dir or None,
      download=config.download, max_train=config.max_train or None,
      max_test=config.max_test or None, seed=0, image_size=config.image_size)
  train, validation = data.carve_validation(train, config.validation_fraction,
                                            seed)
  base = setting(config)
  return SeedRun(
      config=config, workdir=workdir, seed=seed, results=results, done=done,
      current=current, train=train, validation=validation, test=test,
      model=models.get_model(config.model, train.num_classes,
                             **config.model_kwargs),
      recipe=training.Recipe(**config.recipe.to_dict()), base=base,
      setting_key=run_key(base), is_writer=jax.process_index() == 0)


# ----------------------------------------------------------------------------
# Read-outs
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MembershipAttack:
  """PGU §4.1 (iv): the fitted attack and the held-out negatives' logits."""
  attack: mia.OutputAttack
  reference_logits: list
  images: np.ndarray
  n_models: int


def membership_attack(run: SeedRun, part: str, forget, retain
                      ) -> MembershipAttack | None:
  """Fits PGU's attack on the forget outputs of `mia_models` models trained
  on the whole training set (members) and as many trained on `retain`
  (non-members); None when `mia_models` is 0. Models trained with the forget
  set are shared by every part (they see the same data)."""
  settings = run.config[part]
  n = settings.get('mia_models', 0)
  if not n:
    return None
  digest = _digest(np.asarray(retain, np.int64))
  images = run.train.images[np.asarray(forget)]
  members = [run.logits(run.trained(f'mia-with-{i}', run.train, None,
                                    f'mia/with/{i}')[0], images)
             for i in range(n)]
  others = [run.logits(run.trained(f'mia-without-{digest}-{i}', run.train,
                                   retain, f'mia/without/{digest}/{i}')[0],
                       images) for i in range(n)]
  reference = [run.logits(run.trained(
      f'mia-reference-{digest}-{i}', run.train, retain,
      f'mia/reference/{digest}/{i}')[0], images)
               for i in range(settings.mia_reference_models)]
  return MembershipAttack(mia.fit_output_attack(members, others), reference,
                          images, n)


def roc_on_grid(fpr: np.ndarray, tpr: np.ndarray) -> list[float]:
  """TPR of the step ROC at every `ROC_FPR` (the best point with FPR ≤ x)."""
  at = np.searchsorted(fpr, ROC_FPR, side='right') - 1
  return [float(v) for v in np.asarray(tpr)[np.clip(at, 0, None)]]


def forget_readouts(run: SeedRun, variables, forget_images: np.ndarray,
                    attack: MembershipAttack | None) -> dict:
  """Entropy of the outputs on forget (mean and log-entropy histogram, PGU
  Figs. 1, 3, 5) and, with an attack, its AUC and ROC (Figs. 2, 3d, 6)."""
  logits = run.logits(variables, forget_images)
  entropy = np.asarray(mia.output_entropy(logits), np.float64)
  counts, edges = mia.entropy_histogram(logits, bins=ENTROPY_BINS,
                                        log_entropy=True, floor=ENTROPY_FLOOR)
  out = {'forget_entropy_mean': float(entropy.mean()),
         'forget_entropy_median': float(np.median(entropy)),
         'forget_log_entropy_counts': [int(c) for c in counts],
         'forget_log_entropy_edges': [float(e) for e in edges]}
  if attack is not None:
    roc = mia.output_attack_roc(attack.attack, logits, attack.reference_logits)
    out.update({'mia_auc': roc.auc, 'mia_roc_fpr': [float(v) for v in ROC_FPR],
                'mia_roc_tpr': roc_on_grid(roc.fpr, roc.tpr),
                'mia_models': attack.n_models,
                'mia_reference_models': len(attack.reference_logits)})
  return out


def _method_info(info: dict) -> dict:
  return {f'method_{k}': v for k, v in info.items()}


def _row_hparams(hparams) -> dict:
  """The settings a run used, as its row records them: PGU's mode-dependent
  defaults (None in the dataclass) resolved, so no row hides a default."""
  return dataclasses.asdict(hparams.resolved() if hasattr(hparams, 'resolved')
                            else hparams)


def _unlearn(run: SeedRun, name: str, hparams, task: UnlearnTask, purpose: str):
  """(Unlearned, wall seconds); a fresh cache per run, so PGU's seconds hold
  its R Rᵀ cache and SVD as the paper's times do."""
  method = get_method(name)
  start = time.time()
  out = as_unlearned(method.unlearn(task, hparams,
                                    seed_key(run.seed, purpose)))
  return out, time.time() - start


def _method_runs(run: SeedRun, part: str, **identity):
  """[(method, variant, hparams, key)] of a part's methods."""
  runs = []
  for name in _part_methods(run.config, part):
    for variant, hparams in method_variants(run.config, name):
      runs.append((name, variant, hparams,
                   run.key(part, name, variant, **identity)))
  return runs


# ----------------------------------------------------------------------------
# Parts
# ----------------------------------------------------------------------------


def removal(run: SeedRun) -> None:
  """§4.2: forget a random set of training samples."""
  settings = run.config.removal
  none_key = run.key('removal', 'none')
  runs = _method_runs(run, 'removal')
  if {none_key} | {r[-1] for r in runs} <= run.done:
    return
  pool = np.arange(len(run.train))
  if settings.from_class >= 0:
    pool = np.flatnonzero(run.train.labels == settings.from_class)
  forget = np.sort(host_rng(run.seed, 'pgu/removal').choice(
      pool, settings.num_forget, replace=False))
  retain = np.setdiff1d(np.arange(len(run.train)), forget)
  original, original_seconds = run.original()
  attack = membership_attack(run, 'removal', forget, retain)
  forget_split = run.train.subset(forget)
  retain_split = run.train.subset(retain)

  def measure(variables) -> dict:
    return {'forget_accuracy': run.accuracy(variables, forget_split),
            'retain_accuracy': run.accuracy(variables, retain_split),
            'test_accuracy': run.accuracy(variables, run.test),
            **forget_readouts(run, variables, forget_split.images, attack)}

  common = {'n_forget': int(forget.size), 'from_class': settings.from_class}
  run.record(none_key, 'removal', 'none', {
      **common, 'variant': None, 'hparams': {}, 'seconds': original_seconds,
      **measure(original)})
  for name, variant, hparams, key in runs:
    if key in run.done:
      continue
    task = run.task(original, run.train, forget, retain)
    out, seconds = _unlearn(run, name, hparams, task,
                            f'removal/{name}/{variant}')
    run.record(key, 'removal', name, {
        **common, 'variant': variant, 'hparams': _row_hparams(hparams),
        'seconds': seconds, **measure(out.variables),
        **_method_info(out.info)})


def masked_accuracy(run: SeedRun, variables, split: Split, label: int
                    ) -> float:
  """Accuracy with class `label`'s logit removed (PGU §4.3: the forgotten
  class's row of the last layer is dropped before evaluating)."""
  if len(split) == 0:
    return float('nan')
  logits = run.logits(variables, split.images)
  logits[:, label] = -np.inf
  return float(np.mean(logits.argmax(-1) == split.labels))


def class_removal(run: SeedRun) -> None:
  """§4.3: forget every training sample of one class."""
  settings = run.config.class_removal
  label = settings.forget_class
  none_key = run.key('class_removal', 'none')
  runs = _method_runs(run, 'class_removal')
  if {none_key} | {r[-1] for r in runs} <= run.done:
    return
  forget = np.flatnonzero(run.train.labels == label)
  retain = np.flatnonzero(run.train.labels != label)
  original, original_seconds = run.original()
  attack = membership_attack(run, 'class_removal', forget, retain)
  splits = {
      'forget': run.train.subset(forget), 'retain': run.train.subset(retain),
      'class_test': run.test.subset(np.flatnonzero(run.test.labels == label)),
      'retain_test': run.test.subset(np.flatnonzero(run.test.labels != label)),
      'test': run.test}
  retain_validation = run.validation.subset(
      np.flatnonzero(run.validation.labels != label))

  def measure(variables) -> dict:
    out = {f'{name}_accuracy': run.accuracy(variables, split)
           for name, split in splits.items()}
    predictions = training.predict(run.model, variables,
                                   splits['class_test'].images)
    out['class_test_prediction_counts'] = [
        int(c) for c in np.bincount(predictions,
                                    minlength=run.train.num_classes)]
    out['retain_test_accuracy_masked'] = masked_accuracy(
        run, variables, splits['retain_test'], label)
    out.update(forget_readouts(run, variables, splits['forget'].images,
                               attack))
    return out

  common = {'n_forget': int(forget.size), 'forget_class': label}
  run.record(none_key, 'class_removal', 'none', {
      **common, 'variant': None, 'hparams': {}, 'seconds': original_seconds,
      **measure(original)})
  for name, variant, hparams, key in runs:
    if key in run.done:
      continue
    # PGU's early stopping brings the forget accuracy to the stop reference
    # (§3.2.3: chance, 1/C, when a whole class goes; or the validation
    # accuracy); every method validates on the retained classes.
    if _is_pgu(name):
      # unlearn_class.py's core-space rule (one vector more than unlearn.py),
      # unless the config names one.
      rule = hparams.core_dimension_rule or 'count_at_most_plus_one'
      hparams = dataclasses.replace(hparams,
                                    forget_target=settings.stop_reference,
                                    core_dimension_rule=rule)
    task = run.task(original, run.train, forget, retain, retain_validation)
    out, seconds = _unlearn(run, name, hparams, task,
                            f'class_removal/{name}/{variant}')
    run.record(key, 'class_removal', name, {
        **common, 'variant': variant, 'hparams': _row_hparams(hparams),
        'seconds': seconds, 'stop_reference': settings.stop_reference
        if _is_pgu(name) else None, **measure(out.variables),
        **_method_info(out.info)})


def incremental_requests(train: Split, num_requests: int, request_size: int,
                         seed: int) -> list[np.ndarray]:
  """§4.4: each request draws request_size / C samples of every class (the
  remainder from random classes) from what earlier requests left."""
  rng = host_rng(seed, 'pgu/incremental')
  left = np.ones(len(train), bool)
  classes = np.arange(train.num_classes)
  requests = []
  for _ in range(num_requests):
    per_class = np.full(classes.size, request_size // classes.size)
    per_class[rng.choice(classes.size, request_size % classes.size,
                         replace=False)] += 1
    rows = []
    for c, k in zip(classes, per_class):
      pool = np.flatnonzero(left & (train.labels == c))
      if k > pool.size:
        raise ConfigError(
            f'incremental: {num_requests} requests of {request_size} need '
            f'more samples of class {c} than the '
            f'{int(np.sum(train.labels == c))} in the training set; lower '
            'num_requests or request_size')
      rows.append(rng.choice(pool, int(k), replace=False))
    request = np.sort(np.concatenate(rows))
    left[request] = False
    requests.append(request)
  return requests


def incremental(run: SeedRun) -> None:
  """§4.4: a sequence of removal requests, each served from the last model."""
  settings = run.config.incremental
  n = settings.num_requests
  none_key = run.key('incremental', 'none', request=0)
  chains = [(name, variant, hparams,
             [run.key('incremental', name, variant, request=r)
              for r in range(1, n + 1)])
            for name in _part_methods(run.config, 'incremental')
            for variant, hparams in method_variants(run.config, name)]
  if {none_key} | {k for c in chains for k in c[-1]} <= run.done:
    return
  requests = incremental_requests(run.train, n, settings.request_size,
                                  run.seed)
  original, original_seconds = run.original()
  removed_after = [np.sort(np.concatenate(requests[:r + 1])) for r in range(n)]
  final_retain = np.setdiff1d(np.arange(len(run.train)), removed_after[-1])
  attack = membership_attack(run, 'incremental', removed_after[-1],
                             final_retain)

  def measure(variables, r: int, last: bool) -> dict:
    """After request r (1-based; 0 = the original, measured on the first
    request's rows): test, retain (what is left), this request's rows and
    every row removed so far."""
    removed = removed_after[r - 1] if r else np.zeros(0, np.int64)
    this = requests[max(r, 1) - 1]
    left = np.setdiff1d(np.arange(len(run.train)), removed)
    out = {'request': r, 'n_forget': int(this.size),
           'n_removed': int(removed.size),
           'test_accuracy': run.accuracy(variables, run.test),
           'retain_accuracy': run.accuracy(variables, run.train.subset(left)),
           'forget_accuracy': run.accuracy(variables, run.train.subset(this)),
           'removed_accuracy': run.accuracy(variables,
                                            run.train.subset(removed))}
    # The read-outs of Figs. 5-6 on every row removed by the end; the attack
    # only there (its negatives never saw any of them).
    out.update(forget_readouts(run, variables,
                               run.train.images[removed_after[-1]],
                               attack if last else None))
    return out

  run.record(none_key, 'incremental', 'none', {
      'variant': None, 'hparams': {}, 'seconds': original_seconds,
      **measure(original, 0, last=True)})
  for name, variant, hparams, keys in chains:
    if set(keys) <= run.done:
      continue
    variables, state, cache_seconds = original, None, None
    if _is_pgu(name):
      start = time.time()
      state = pgu_lib.start_incremental(
          run.model, original, run.train.images,
          hparams.resolved().covariance_chunk_size,
          conv_patch_stride=hparams.resolved().conv_patch_stride)
      cache_seconds = time.time() - start
    for r, (rows, key) in enumerate(zip(requests, keys), 1):
      purpose = f'incremental/{name}/{variant}/{r}'
      start = time.time()
      if state is not None:
        state, out = pgu_lib.unlearn_request(
            run.model, state, run.train.subset(rows), run.validation, hparams,
            seed_key(run.seed, purpose))
        info = out.info
      else:
        retain = np.setdiff1d(np.arange(len(run.train)), removed_after[r - 1])
        task = run.task(variables, run.train, rows, retain)
        out, _ = _unlearn(run, name, hparams, task, purpose)
        info = out.info
      seconds = time.time() - start
      variables = out.variables
      run.record(key, 'incremental', name, {
          'variant': variant, 'hparams': _row_hparams(hparams),
          'seconds': seconds, 'cache_seconds': cache_seconds,
          **measure(variables, r, last=r == n), **_method_info(info)})


def depoison(run: SeedRun) -> None:
  """§4.5: pairwise label flips at several budgets; every flipped sample is
  handed over; the poisoned M_o and the clean M* are the references."""
  settings = run.config.depoison
  pairs = CLASS_PAIRS[settings.class_pairs]
  for fraction in settings.flip_fractions:
    ref_keys = {name: run.key('depoison', name, flip_fraction=fraction)
                for name in ('none', 'oracle')}
    runs = _method_runs(run, 'depoison', flip_fraction=fraction)
    if set(ref_keys.values()) | {r[-1] for r in runs} <= run.done:
      continue
    try:
      manipulation = label_flip.manipulate(
          run.train, run.test, seed=run.seed, flip_fraction=fraction,
          class_pairs=pairs)
    except ValueError as e:
      raise ConfigError(f'depoison at flip fraction {fraction}: {e}') from e
    tag = f'flip-{_digest(fraction, settings.class_pairs)}'
    poisoned, poisoned_seconds = run.trained(
        f'{tag}-poisoned', manipulation.train, None,
        f'depoison/{fraction}/poisoned')
    clean, clean_seconds = run.trained(
        f'{tag}-clean', manipulation.train, manipulation.clean_indices,
        f'depoison/{fraction}/clean')
    forget = manipulation.manipulated
    splits = {'forget': manipulation.train.subset(forget),
              'forget_clean': manipulation.manipulated_split,
              'retain': manipulation.train.subset(manipulation.clean_indices),
              'test': run.test, 'affected': manipulation.affected,
              'unaffected': manipulation.unaffected}

    def measure(variables) -> dict:
      return {f'{name}_accuracy': run.accuracy(variables, split)
              for name, split in splits.items()}

    reference = {'none': measure(poisoned), 'oracle': measure(clean)}
    common = {'flip_fraction': fraction, 'n_forget': int(forget.size),
              'class_pairs': manipulation.info['class_pairs']}
    for name, seconds in (('none', poisoned_seconds),
                          ('oracle', clean_seconds)):
      run.record(ref_keys[name], 'depoison', name, {
          **common, 'variant': None, 'hparams': {}, 'seconds': seconds,
          **reference[name]})
    for name, variant, hparams, key in runs:
      if key in run.done:
        continue
      task = run.task(poisoned, manipulation.train, forget,
                      manipulation.clean_indices)
      out, seconds = _unlearn(run, name, hparams, task,
                              f'depoison/{fraction}/{name}/{variant}')
      run.record(key, 'depoison', name, {
          **common, 'variant': variant,
          'hparams': _row_hparams(hparams), 'seconds': seconds,
          **measure(out.variables),
          'poisoned_test_accuracy': reference['none']['test_accuracy'],
          'clean_test_accuracy': reference['oracle']['test_accuracy'],
          **_method_info(out.info)})


PARTS: dict[str, Callable[[SeedRun], None]] = {
    'removal': removal,              # §4.2, Table 1, Figs. 1-2
    'class_removal': class_removal,  # §4.3, Table 2, Figs. 3-4
    'incremental': incremental,      # §4.4, Table 3, Figs. 5-6
    'depoison': depoison,            # §4.5, Table 4
}


def check_with_data(config, train: Split) -> None:
  """The checks that need the training set (its classes and their sizes),
  before any training; raises ConfigError."""
  num_classes = train.num_classes
  sizes = np.bincount(train.labels, minlength=num_classes)

  def check_class(what, label):
    if not 0 <= label < num_classes:
      raise ConfigError(f'config.{what} = {label} is not a class of '
                        f'{config.dataset} (0 … {num_classes - 1})')

  if 'removal' in config.parts:
    settings = config.removal
    pool = len(train)
    if settings.from_class >= 0:
      check_class('removal.from_class', settings.from_class)
      pool = int(sizes[settings.from_class])
    if settings.num_forget >= pool:
      raise ConfigError(f'config.removal.num_forget = {settings.num_forget} '
                        f'leaves nothing of the {pool} candidate samples')
  if 'class_removal' in config.parts:
    check_class('class_removal.forget_class',
                config.class_removal.forget_class)
  if 'incremental' in config.parts:
    settings = config.incremental
    need = settings.num_requests * -(-settings.request_size // num_classes)
    if need > sizes.min():
      raise ConfigError(
          f'config.incremental: {settings.num_requests} requests of '
          f'{settings.request_size} take up to {need} samples of every class; '
          f'the smallest class has {int(sizes.min())}. Lower num_requests or '
          'request_size.')
  if 'depoison' in config.parts:
    pairs = CLASS_PAIRS[config.depoison.class_pairs]
    if pairs != 'random':
      try:
        label_flip.check_pairs(pairs, num_classes)
      except ValueError as e:
        raise ConfigError(f'config.depoison.class_pairs = '
                          f'{config.depoison.class_pairs!r}: {e}') from e


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Runs (or resumes) the study; returns the rows of this sweep."""
  validate_config(config)
  train, _ = data.load_dataset(
      config.dataset, data_dir=config.data_dir or None,
      download=config.download, max_train=config.max_train or None,
      max_test=config.max_test or None, seed=0, image_size=config.image_size)
  check_with_data(config, data.carve_validation(
      train, config.validation_fraction, config.seeds[0])[0])
  os.makedirs(workdir, exist_ok=True)
  results = ResultsFile(os.path.join(workdir, 'results.jsonl'))
  done = results.done_keys()
  current = set()
  is_writer = jax.process_index() == 0
  progress = tqdm.tqdm(total=len(config.seeds) * len(config.parts),
                       desc=STUDY, unit='part', disable=not is_writer,
                       dynamic_ncols=True)
  for seed in config.seeds:
    seed_run = load_seed(config, workdir, seed, results, done, current)
    for part in config.parts:
      progress.set_postfix_str(f'seed={seed} {part}')
      PARTS[part](seed_run)
      progress.update(1)
  progress.close()
  return [row for row in results.rows() if row['run_key'] in current]
