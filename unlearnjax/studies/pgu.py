"""The PGU evaluation (Hoang et al. 2024, §4) at the scale of the data set.

Four parts, each one function in `PARTS` that lists its runs for a seed (a
new part is one function and one line), run for every seed on the same data
and original model M_o:

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
outputs on forget (Figs. 1, 3, 5); seconds without compilation
(`sweep.timed`). Curves (`unlearnjax.curves`, `config.curves_every`): the
first part of `config.parts` on the first seed (`SeedRun.curve_run`): every
method × variant, and M_o's training when a removal part is first; PGU's
points are its own evaluations after every epoch.

On the sweep engine (`sweep.py`): one group per seed, since every part of a
seed shares the data, M_o and the membership attack's shadow models trained
on the whole training set; what one part shares (its forget set, attack,
poisoned and clean models) is built by its first pending run. One row per
run: a method × variant of a part (× flip budget for `depoison`); an
incremental chain is one run per request, run in order, the chain kept in
the seed's set-up (a rerun after a kill mid-chain recomputes the requests
the next one builds on). Every trained reference and shadow model is an
orbax checkpoint under `<workdir>/checkpoints/`, shared by the parts that
need the same one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable

import jax
import ml_collections
import numpy as np

from unlearnjax import curves, data, models, sweep, training
from unlearnjax.data.split import Split
from unlearnjax.errors import ConfigError
from unlearnjax.manipulations import label_flip
from unlearnjax.manipulations.base import host_rng
from unlearnjax.metrics import mia
from unlearnjax.results import run_key
from unlearnjax.sweep import seed_key, trained_model
from unlearnjax.unlearn import UnlearnTask, get_method
from unlearnjax.unlearn import pgu as pgu_lib
from unlearnjax.unlearn.base import as_unlearned
from unlearnjax.unlearn.registry import check_all_overrides

STUDY = 'pgu'
# Part settings that list what to sweep: they are not part of a run's key,
# so adding a method or a budget runs only the new runs.
SWEEP_FIELDS = ('methods', 'flip_fractions')
CLASS_PAIRS = {'random': 'random', 'digits': label_flip.DIGITS_PAIRS,
               'cifar10': label_flip.CIFAR10_PAIRS}
STOP_REFERENCES = ('chance', 'validation')
# unlearn_class.py's core-space rule (one vector more than unlearn.py's),
# for whole-class removal unless the config names one (§4.3).
CLASS_REMOVAL_CORE_RULE = 'count_at_most_plus_one'
ROC_FPR = np.linspace(0.0, 1.0, 51)     # the stored ROC's FPR grid
ENTROPY_BINS = 24                       # log-entropy histogram on forget
ENTROPY_FLOOR = 1e-6
REFERENCES = ('none', 'oracle')         # rows of a reference model, no method


# ----------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------


def _part_methods(config, part: str) -> tuple[str, ...]:
  """The methods a part runs, each once, in the config's order."""
  return tuple(dict.fromkeys(config[part].methods))


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
    check_all_overrides(config.hparams)
    for name in config.sweeps:
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
  for name in config.sweeps:
    fields = [f.name for f in dataclasses.fields(get_method(name).hparams)]
    unknown = sorted(set(config.sweeps[name]) - set(fields))
    if unknown:
      raise ConfigError(f'config.sweeps.{name} has unknown fields {unknown}; '
                        f'valid: {", ".join(fields)}.')
    if len(config.sweeps[name]) > 1:
      raise ConfigError(f'config.sweeps.{name}: sweep one field per method '
                        f'(got {sorted(config.sweeps[name])})')
    for field, values in config.sweeps[name].items():
      if not isinstance(values, (tuple, list)) or not values:
        raise ConfigError(f'config.sweeps.{name}.{field} must be a non-empty '
                          f'tuple of values, got {values!r}')
  methods = {m for part in config.parts for m in _part_methods(config, part)}
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


def _configured(config, name: str) -> dict:
  """`config.hparams.<name>` as a dict (every field of the method, as the
  config sets it; {} for a method the config does not list)."""
  return config.hparams[name].to_dict() if name in config.hparams else {}


def method_variants(config, name: str) -> list[tuple[str | None, object]]:
  """[(variant label or None, hparams)]: one per value of the method's sweep
  (`config.sweeps.<method>.<field>`), on top of `config.hparams.<method>`
  (each method runs this one configuration: no search)."""
  method = get_method(name)
  base = _configured(config, name)
  sweep_ = config.sweeps.get(name, {})
  if not sweep_:
    return [(None, dataclasses.replace(method.hparams(), **base))]
  (field, values), = sweep_.items()
  return [(f'{field}={value}',
           dataclasses.replace(method.hparams(), **{**base, field: value}))
          for value in values]


def has_field(hparams, field: str) -> bool:
  """Whether a method's hparams have `field`: a part that sets a field
  (class removal's `forget_target`, its core-space rule) sets it for the
  methods that have it, and no others."""
  return field in {f.name for f in dataclasses.fields(hparams)}


def serves_from_incremental_cache(name: str) -> bool:
  """Whether method `name` serves §4.4's requests through PGU's incremental
  cache (§3.2.4: R Rᵀ over the training set once, each request's R_f R_fᵀ
  subtracted; `pgu_lib.start_incremental` / `unlearn_request`, which take
  PGU's hparams): the methods whose hparams are `PGUHparams`. Every other
  method is chained through its own `unlearn`."""
  return issubclass(get_method(name).hparams, pgu_lib.PGUHparams)


def class_removal_hparams(hparams, stop_reference: str):
  """§4.3's settings of a method that has them: PGU's early stopping brings
  the forget accuracy to `stop_reference` (§3.2.3: chance, 1/C, when a whole
  class goes, or the validation accuracy), and its core space is cut by
  `unlearn_class.py`'s rule unless the config names one."""
  changes = {}
  if has_field(hparams, 'forget_target'):
    changes['forget_target'] = stop_reference
  if has_field(hparams, 'core_dimension_rule'):
    changes['core_dimension_rule'] = (hparams.core_dimension_rule
                                      or CLASS_REMOVAL_CORE_RULE)
  return dataclasses.replace(hparams, **changes)


def _digest(*parts) -> str:
  blob = b''.join(np.asarray(p).tobytes() if isinstance(p, np.ndarray)
                  else repr(p).encode() for p in parts)
  return hashlib.sha1(blob).hexdigest()[:12]


# ----------------------------------------------------------------------------
# One seed: its runs (SeedPlan) and its set-up (SeedRun)
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SeedPlan:
  """What a part needs to list its runs for one seed: keys and identities
  (no data, no training)."""
  config: ml_collections.ConfigDict
  seed: int
  base: dict
  setting_key: str

  def key(self, part: str, method: str, variant: str | None = None,
          **identity) -> str:
    """The run key of one row: the seed's setting, the part's settings
    (without the lists of what it sweeps), the method's hparams as the
    config sets them, the variant and the run's own identity."""
    settings = {k: v for k, v in self.config[part].to_dict().items()
                if k not in SWEEP_FIELDS}
    hparams = {} if method in REFERENCES else _configured(self.config, method)
    return run_key({**self.base, 'part': part, 'part_settings': settings,
                    'method': method, 'variant': variant, 'hparams': hparams,
                    'seed': self.seed, **identity})

  def run(self, part: str, method: str, variant: str | None,
          measure: Callable[['SeedRun'], dict], **identity) -> sweep.Run:
    """A run of `part`; every row of it carries the identity fields (a
    diverged run's too)."""
    label = ' '.join([f'seed={self.seed}', part, method]
                     + ([variant] if variant else [])
                     + [f'{k}={v}' for k, v in identity.items()])
    return sweep.Run(
        self.key(part, method, variant, **identity), label, measure,
        {'study': STUDY, 'part': part, 'method': method, 'variant': variant,
         'dataset': self.config.dataset, 'model': self.config.model,
         'seed': self.seed, 'setting_key': self.setting_key, **identity})

  def method_runs(self, part: str, measure, **identity) -> list[sweep.Run]:
    """A run per method × variant of `part`; `measure(seed_run, name,
    variant, hparams)` gives its fields."""
    runs = []
    for name in _part_methods(self.config, part):
      for variant, hparams in method_variants(self.config, name):
        runs.append(self.run(
            part, name, variant,
            lambda s, name=name, variant=variant, hparams=hparams:
            measure(s, name, variant, hparams), **identity))
    return runs


@dataclasses.dataclass
class SeedRun:
  """The set-up every part of one seed shares (data, model, recipe; M_o and
  each part's shared state built on first use)."""
  config: ml_collections.ConfigDict
  workdir: str
  seed: int
  train: Split
  validation: Split
  test: Split
  model: object
  recipe: training.Recipe
  base: dict
  setting_key: str
  built: dict = dataclasses.field(default_factory=dict)

  def shared(self, name: str, build: Callable[[], object]):
    """`build()`, once per seed: what the runs of one part share."""
    if name not in self.built:
      self.built[name] = build()
    return self.built[name]

  def trained(self, name: str, split: Split, indices, purpose: str,
              curve=None):
    """(variables, seconds) of a model trained with the recipe on
    split[indices], orbax-cached under `<setting>-seed<seed>-<name>`
    (`curve` records the training when it runs)."""
    return trained_model(
        self.workdir, f'{self.setting_key}-seed{self.seed}-{name}', self.model,
        self.recipe, split, indices, seed_key(self.seed, purpose),
        {'setting': self.base, 'seed': self.seed, 'purpose': purpose},
        curve=curve)

  def curve_run(self, part: str) -> str | None:
    """The name of the one run whose curves the study records, if `part`
    of this seed is it: the first part of `config.parts`, first seed."""
    first = (part == list(self.config.parts)[0]
             and self.seed == self.config.seeds[0])
    return f'{part}-seed{self.seed}' if first else None

  def original(self, part: str | None = None, forget=None):
    """M_o on the whole training set (shared by the removal parts); the
    curve run's `part` records its training (on that part's `forget`)."""
    def train():
      with curves.original_recording(
          self.config, self.workdir, STUDY,
          self.curve_run(part) if part else None, self.model, self.train,
          forget, self.validation) as curve:
        return self.trained('original', self.train, None, 'original', curve)
    return self.shared('original', train)

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


def load_seed(config, workdir, seed) -> SeedRun:
  """A seed's group set-up: its data (the validation split carved with the
  seed) and model; nothing is trained yet."""
  train, validation, test = data.load_from_config(config, seed)
  base = setting(config)
  return SeedRun(
      config=config, workdir=workdir, seed=seed, train=train,
      validation=validation, test=test,
      model=models.get_model(config.model, train.num_classes,
                             **config.model_kwargs),
      recipe=training.Recipe(**config.recipe.to_dict()), base=base,
      setting_key=run_key(base))


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
  """(Unlearned, its `sweep.Timing`); a fresh cache per run, so PGU's
  seconds hold its R Rᵀ cache and SVD as the paper's times do."""
  method = get_method(name)
  part, label = purpose.split('/', 1)
  recorder = curves.method_recorder(
      run.config, run.workdir, STUDY, run.curve_run(part),
      label.replace('/None', '').replace('/', '-'))
  with recorder(task) as task, sweep.timed() as timing:
    out = as_unlearned(method.unlearn(task, hparams,
                                      seed_key(run.seed, purpose)))
    jax.block_until_ready(out.variables)
  return out, timing


def _timing_fields(timing: sweep.Timing) -> dict:
  return {'seconds': timing.seconds, 'compile_seconds': timing.compile_seconds}


# ----------------------------------------------------------------------------
# Parts: each lists its runs for one seed
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RemovalSetup:
  """What every run of a removal part (§4.2, §4.3) of a seed shares."""
  original: object
  original_seconds: float
  forget: np.ndarray
  retain: np.ndarray
  measure: Callable[[object], dict]
  common: dict                  # fields of every row of the part
  validation: Split | None = None


def _removal_setup(run: SeedRun) -> RemovalSetup:
  settings = run.config.removal
  pool = np.arange(len(run.train))
  if settings.from_class >= 0:
    pool = np.flatnonzero(run.train.labels == settings.from_class)
  forget = np.sort(host_rng(run.seed, 'pgu/removal').choice(
      pool, settings.num_forget, replace=False))
  retain = np.setdiff1d(np.arange(len(run.train)), forget)
  original, original_seconds = run.original('removal', forget)
  attack = membership_attack(run, 'removal', forget, retain)
  forget_split = run.train.subset(forget)
  retain_split = run.train.subset(retain)

  def measure(variables) -> dict:
    return {'forget_accuracy': run.accuracy(variables, forget_split),
            'retain_accuracy': run.accuracy(variables, retain_split),
            'test_accuracy': run.accuracy(variables, run.test),
            **forget_readouts(run, variables, forget_split.images, attack)}

  return RemovalSetup(original, original_seconds, forget, retain, measure,
                      {'n_forget': int(forget.size),
                       'from_class': settings.from_class})


def removal(plan: SeedPlan) -> list[sweep.Run]:
  """§4.2: forget a random set of training samples."""

  def shared(run: SeedRun) -> RemovalSetup:
    return run.shared('removal', lambda: _removal_setup(run))

  def reference(run: SeedRun) -> dict:
    s = shared(run)
    return {**s.common, 'hparams': {}, 'seconds': s.original_seconds,
            **s.measure(s.original)}

  def method(run: SeedRun, name, variant, hparams) -> dict:
    s = shared(run)
    task = run.task(s.original, run.train, s.forget, s.retain)
    out, timing = _unlearn(run, name, hparams, task,
                           f'removal/{name}/{variant}')
    return {**s.common, 'hparams': _row_hparams(hparams),
            **_timing_fields(timing), **s.measure(out.variables),
            **_method_info(out.info)}

  return ([plan.run('removal', 'none', None, reference)]
          + plan.method_runs('removal', method))


def masked_accuracy(run: SeedRun, variables, split: Split, label: int
                    ) -> float:
  """Accuracy with class `label`'s logit removed (PGU §4.3: the forgotten
  class's row of the last layer is dropped before evaluating)."""
  if len(split) == 0:
    return float('nan')
  logits = run.logits(variables, split.images)
  logits[:, label] = -np.inf
  return float(np.mean(logits.argmax(-1) == split.labels))


def _class_removal_setup(run: SeedRun) -> RemovalSetup:
  label = run.config.class_removal.forget_class
  forget = np.flatnonzero(run.train.labels == label)
  retain = np.flatnonzero(run.train.labels != label)
  original, original_seconds = run.original('class_removal', forget)
  attack = membership_attack(run, 'class_removal', forget, retain)
  splits = {
      'forget': run.train.subset(forget), 'retain': run.train.subset(retain),
      'class_test': run.test.subset(np.flatnonzero(run.test.labels == label)),
      'retain_test': run.test.subset(np.flatnonzero(run.test.labels != label)),
      'test': run.test}
  # Every method validates on the retained classes.
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

  return RemovalSetup(original, original_seconds, forget, retain, measure,
                      {'n_forget': int(forget.size), 'forget_class': label},
                      retain_validation)


def class_removal(plan: SeedPlan) -> list[sweep.Run]:
  """§4.3: forget every training sample of one class."""
  stop_reference = plan.config.class_removal.stop_reference

  def shared(run: SeedRun) -> RemovalSetup:
    return run.shared('class_removal', lambda: _class_removal_setup(run))

  def reference(run: SeedRun) -> dict:
    s = shared(run)
    return {**s.common, 'hparams': {}, 'seconds': s.original_seconds,
            **s.measure(s.original)}

  def method(run: SeedRun, name, variant, hparams) -> dict:
    s = shared(run)
    hparams = class_removal_hparams(hparams, stop_reference)
    task = run.task(s.original, run.train, s.forget, s.retain, s.validation)
    out, timing = _unlearn(run, name, hparams, task,
                           f'class_removal/{name}/{variant}')
    return {**s.common, 'hparams': _row_hparams(hparams),
            **_timing_fields(timing),
            'stop_reference': stop_reference
            if has_field(hparams, 'forget_target') else None,
            **s.measure(out.variables), **_method_info(out.info)}

  return ([plan.run('class_removal', 'none', None, reference)]
          + plan.method_runs('class_removal', method))


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


@dataclasses.dataclass
class Chain:
  """One method's chain of §4.4 requests: the model after `served`
  requests and, for a method served from PGU's incremental cache, the
  cache (`pgu_lib.IncrementalState`)."""
  variables: object
  state: pgu_lib.IncrementalState | None = None
  served: int = 0
  cache_timing: sweep.Timing | None = None
  diverged: str | None = None      # which request diverged, and why


@dataclasses.dataclass
class IncrementalSetup:
  """What every run of the incremental part of a seed shares; `chains`
  holds each (method, variant)'s chain between its requests' runs."""
  requests: list
  removed_after: list
  original: object
  original_seconds: float
  measure: Callable[[object, int, bool], dict]
  chains: dict = dataclasses.field(default_factory=dict)


def _incremental_setup(run: SeedRun) -> IncrementalSetup:
  settings = run.config.incremental
  n = settings.num_requests
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

  return IncrementalSetup(requests, removed_after, original, original_seconds,
                          measure)


def _start_chain(run: SeedRun, s: IncrementalSetup, name: str, hparams
                 ) -> Chain:
  """A chain before its first request: from M_o, with PGU's cache (R Rᵀ
  over the whole training set, timed apart as `cache_seconds`)."""
  if not serves_from_incremental_cache(name):
    return Chain(s.original)
  resolved = hparams.resolved()
  with sweep.timed() as timing:
    state = pgu_lib.start_incremental(
        run.model, s.original, run.train.images,
        resolved.covariance_chunk_size,
        conv_patch_stride=resolved.conv_patch_stride)
    jax.block_until_ready(state.retain_rrt)
  return Chain(s.original, state, cache_timing=timing)


def _serve_request(run: SeedRun, s: IncrementalSetup, chain: Chain, name,
                   variant, hparams, r: int):
  """Serves request r (1-based) from the chain's model; (Unlearned,
  Timing). A divergence marks the chain, so its later requests are
  diverged rows too."""
  purpose = f'incremental/{name}/{variant}/{r}'
  rows = s.requests[r - 1]
  try:
    if chain.state is not None:
      with sweep.timed() as timing:
        state, out = pgu_lib.unlearn_request(
            run.model, chain.state, run.train.subset(rows), run.validation,
            hparams, seed_key(run.seed, purpose))
        jax.block_until_ready(out.variables)
      chain.state = state
    else:
      retain = np.setdiff1d(np.arange(len(run.train)), s.removed_after[r - 1])
      task = run.task(chain.variables, run.train, rows, retain)
      out, timing = _unlearn(run, name, hparams, task, purpose)
  except FloatingPointError as e:
    chain.diverged = f'request {r}: {e}'
    raise
  chain.variables = out.variables
  chain.served = r
  return out, timing


def incremental(plan: SeedPlan) -> list[sweep.Run]:
  """§4.4: a sequence of removal requests, each served from the last model:
  one run per request of each method's chain, in order."""
  n = plan.config.incremental.num_requests

  def shared(run: SeedRun) -> IncrementalSetup:
    return run.shared('incremental', lambda: _incremental_setup(run))

  def reference(run: SeedRun) -> dict:
    s = shared(run)
    return {'hparams': {}, 'seconds': s.original_seconds,
            **s.measure(s.original, 0, last=True)}

  def request(run: SeedRun, name, variant, hparams, r: int) -> dict:
    s = shared(run)
    chain = s.chains.pop((name, variant), None)
    if chain is None or chain.served >= r:
      chain = _start_chain(run, s, name, hparams)
    if r < n:  # after the last request the chain (and its cache) is freed
      s.chains[(name, variant)] = chain
    if chain.diverged:
      raise FloatingPointError(f'an earlier request of this chain diverged '
                               f'({chain.diverged})')
    # Resumed after a kill mid-chain: redo the requests this one builds on.
    while chain.served < r - 1:
      _serve_request(run, s, chain, name, variant, hparams, chain.served + 1)
    out, timing = _serve_request(run, s, chain, name, variant, hparams, r)
    cache = chain.cache_timing
    return {'hparams': _row_hparams(hparams), **_timing_fields(timing),
            'cache_seconds': cache and cache.seconds,
            'cache_compile_seconds': cache and cache.compile_seconds,
            **s.measure(chain.variables, r, last=r == n),
            **_method_info(out.info)}

  runs = [plan.run('incremental', 'none', None, reference, request=0)]
  for name in _part_methods(plan.config, 'incremental'):
    for variant, hparams in method_variants(plan.config, name):
      runs += [plan.run('incremental', name, variant,
                        lambda run, name=name, variant=variant,
                        hparams=hparams, r=r:
                        request(run, name, variant, hparams, r), request=r)
               for r in range(1, n + 1)]
  return runs


@dataclasses.dataclass(frozen=True)
class DepoisonSetup:
  """What every run of one flip budget of a seed shares (§4.5)."""
  manipulation: object
  poisoned: object
  seconds: dict                 # 'none' (poisoned M_o), 'oracle' (clean M*)
  reference: dict               # their read-outs
  measure: Callable[[object], dict]
  common: dict


def _depoison_setup(run: SeedRun, fraction: float) -> DepoisonSetup:
  settings = run.config.depoison
  try:
    manipulation = label_flip.manipulate(
        run.train, run.test, seed=run.seed, flip_fraction=fraction,
        class_pairs=CLASS_PAIRS[settings.class_pairs])
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

  return DepoisonSetup(
      manipulation, poisoned,
      {'none': poisoned_seconds, 'oracle': clean_seconds},
      {'none': measure(poisoned), 'oracle': measure(clean)}, measure,
      {'flip_fraction': fraction, 'n_forget': int(forget.size),
       'class_pairs': manipulation.info['class_pairs']})


def depoison(plan: SeedPlan) -> list[sweep.Run]:
  """§4.5: pairwise label flips at several budgets; every flipped sample is
  handed over; the poisoned M_o and the clean M* are the references."""

  def shared(run: SeedRun, fraction) -> DepoisonSetup:
    return run.shared(f'depoison/{fraction}',
                      lambda: _depoison_setup(run, fraction))

  def reference(run: SeedRun, name: str, fraction) -> dict:
    s = shared(run, fraction)
    return {**s.common, 'hparams': {}, 'seconds': s.seconds[name],
            **s.reference[name]}

  def method(run: SeedRun, name, variant, hparams, fraction) -> dict:
    s = shared(run, fraction)
    task = run.task(s.poisoned, s.manipulation.train,
                    s.manipulation.manipulated,
                    s.manipulation.clean_indices)
    out, timing = _unlearn(run, name, hparams, task,
                           f'depoison/{fraction}/{name}/{variant}')
    return {**s.common, 'hparams': _row_hparams(hparams),
            **_timing_fields(timing), **s.measure(out.variables),
            'poisoned_test_accuracy': s.reference['none']['test_accuracy'],
            'clean_test_accuracy': s.reference['oracle']['test_accuracy'],
            **_method_info(out.info)}

  runs = []
  for fraction in plan.config.depoison.flip_fractions:
    runs += [plan.run('depoison', name, None,
                      lambda run, name=name, fraction=fraction:
                      reference(run, name, fraction), flip_fraction=fraction)
             for name in REFERENCES]
    runs += plan.method_runs(
        'depoison', lambda run, name, variant, hparams, fraction=fraction:
        method(run, name, variant, hparams, fraction), flip_fraction=fraction)
  return runs


PARTS: dict[str, Callable[[SeedPlan], list[sweep.Run]]] = {
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


def plan(config: ml_collections.ConfigDict, workdir: str) -> sweep.Plan:
  """The study's runs: one group per seed (module docstring), its runs the
  parts' in `config.parts` order. Checks the config (and, on the first
  seed's training set, the class-dependent settings) before any work."""
  validate_config(config)
  check_with_data(config, data.load_from_config(config, config.seeds[0])[0])
  base = setting(config)
  setting_key = run_key(base)
  groups = []
  for seed in config.seeds:
    seed_plan = SeedPlan(config, seed, base, setting_key)
    runs = [run_ for part in config.parts for run_ in PARTS[part](seed_plan)]
    groups.append(sweep.Group(
        f'seed={seed}', lambda seed=seed: load_seed(config, workdir, seed),
        runs))
  return sweep.Plan(STUDY, groups)


def run(config: ml_collections.ConfigDict, workdir: str,
        worker: sweep.Worker | None = None) -> list[dict]:
  """Runs (or resumes) this worker's share; returns the sweep's rows."""
  return sweep.execute(plan(config, workdir), workdir, worker).rows
