"""Every study config value checked where it enters, before any work.

`check_config(config)` walks a study's config and applies one rule per field
name (the same name means the same thing in every study: `seeds`,
`*.target_class`, `*recipe.*`, `*found_fractions`, …), so a bad value fails
in one line that names the field, the value, the valid range and what to do,
and not an hour into a sweep when the group that reads it starts. The
scripts call it before a study's own `validate_config` (cross-field checks
that only one study has stay there).

Adding a field to a study config: if its name matches a rule below it is
checked; otherwise add one line to `RULES`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import numbers
import os
from typing import Any, Callable

from unlearnjax.errors import ConfigError

# Classes of each data set (checks of class labels before any data loads).
NUM_CLASSES = {'digits': 10, 'mnist': 10, 'cifar10': 10, 'cifar100': 100,
               'svhn_cropped': 10, 'patch_camelyon': 2}

Check = Callable[[Any, dict], 'str | None']


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _each(check: Check) -> Check:
  """A check applied to every element of a tuple field (or a scalar)."""
  def run(value, context):
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      problem = check(v, context)
      if problem:
        return problem
    return None
  return run


def fraction(low_open=True, high=1.0, high_open=False) -> Check:
  def run(value, context):
    del context
    ok = _is_number(value) and math.isfinite(value) and (
        value > 0 if low_open else value >= 0) and (
            value < high if high_open else value <= high)
    if not ok:
      return (f'must be a number in {"(" if low_open else "["}0, {high}'
              f'{")" if high_open else "]"}')
    return None
  return _each(run)


def positive_number(value, context):
  del context
  if not (_is_number(value) and math.isfinite(value) and value > 0):
    return 'must be a finite number > 0'
  return None


def non_negative_number(value, context):
  del context
  if not (_is_number(value) and math.isfinite(value) and value >= 0):
    return 'must be a finite number >= 0'
  return None


def count(minimum: int) -> Check:
  def run(value, context):
    del context
    if not (_is_int(value) and value >= minimum):
      return f'must be a whole number >= {minimum}'
    return None
  return _each(run)


def class_label(allow_random: bool = False) -> Check:
  def run(value, context):
    n = context.get('num_classes')
    if allow_random and value == -1:
      return None
    top = f'{n - 1}' if n else 'the last class'
    if not _is_int(value) or value < 0 or (n is not None and value >= n):
      extra = ' (or -1: drawn per seed)' if allow_random else ''
      return (f'must be a class of {context.get("dataset", "the data set")}: '
              f'0..{top}{extra}')
    return None
  return _each(run)


def one_of(valid: tuple | Callable[[], tuple]) -> Check:
  def run(value, context):
    del context
    names = valid() if callable(valid) else valid
    if value not in names:
      return f'is not one of: {", ".join(map(str, names))}'
    return None
  return _each(run)


def non_empty_names(valid: Callable[[], tuple]) -> Check:
  def run(value, context):
    if isinstance(value, (tuple, list)) and not value:
      return 'is empty; give at least one name'
    return one_of(valid)(value, context)
  return run


def seeds(value, context):
  del context
  values = value if isinstance(value, (tuple, list)) else (value,)
  if not values:
    return 'is empty; give at least one seed (e.g. --config.seeds=0,1)'
  if any(not _is_int(v) or v < 0 for v in values):
    return 'must be whole numbers >= 0 (e.g. --config.seeds=0,1,2)'
  if len(set(values)) != len(values):
    return 'holds a seed twice'
  return None


def image_size(value, context):
  if not _is_int(value) or value < 1:
    return 'must be a whole number >= 1'
  if context.get('dataset') == 'digits' and value % 8:
    return 'must be a multiple of 8 for the digits (8 native; 16, 32 upsampled)'
  return None


def _methods():
  from unlearnjax.unlearn import METHODS  # pylint: disable=g-import-not-at-top
  return tuple(sorted(METHODS))


def _manipulations():
  from unlearnjax.manipulations import MANIPULATIONS  # pylint: disable=g-import-not-at-top
  return tuple(sorted(MANIPULATIONS))


def _models():
  from unlearnjax.models import MODELS  # pylint: disable=g-import-not-at-top
  return tuple(sorted(MODELS))


def _datasets():
  from unlearnjax.data import DATASETS  # pylint: disable=g-import-not-at-top
  return DATASETS


POSITIONS = ('bottom_right', 'bottom_left', 'top_right', 'top_left')

# (pattern over the dotted field path, check). First match wins; `hparams.*`
# is the methods' own (their dataclasses check it).
RULES: tuple[tuple[str, Check], ...] = (
    ('hparams.*', lambda v, c: None),
    ('seeds', seeds),
    ('dataset', one_of(_datasets)),
    ('model', one_of(_models)),
    ('*image_size', image_size),
    ('validation_fraction', fraction(high_open=True)),
    ('methods', non_empty_names(_methods)),
    ('*.methods', non_empty_names(_methods)),
    ('manipulations', non_empty_names(_manipulations)),
    ('*max_train', count(0)), ('*max_test', count(0)),
    ('*found_fractions', fraction()), ('found_fraction', fraction()),
    ('budget_fraction', fraction()), ('budgets', fraction()),
    ('*flip_fractions', fraction()), ('*betas', fraction()),
    ('*forget_share', fraction(high_open=True)),
    ('*poison_fraction', fraction(high_open=True)),
    ('*report_fraction', fraction(high_open=True)), ('*num_reported', count(0)),
    ('*confused_share', fraction()),
    ('rho_sensitivity.rhos', fraction(high_open=True)),
    ('*energy_threshold', fraction()),
    ('*num_poisons', count(0)), ('*patch_size', count(0)),
    ('*cross_size', count(0)), ('timing_size', count(0)),
    ('sizes', count(1)), ('rho_sensitivity.sizes', count(1)),
    ('*target_class', class_label()), ('*class_a', class_label()),
    ('*class_b', class_label()), ('class_removal.forget_class', class_label()),
    ('in_class.forget_class', class_label(allow_random=True)),
    ('removal.from_class', class_label(allow_random=True)),
    ('*num_forget', count(1)), ('fresh_draws', count(1)),
    ('*num_requests', count(1)), ('*request_size', count(1)),
    ('*mia_models', count(0)), ('*mia_reference_models', count(1)),
    ('*num_targets', count(1)), ('*restarts', count(1)),
    ('*crafting_steps', count(1)), ('*canceling_steps', count(1)),
    ('*position', one_of(POSITIONS)), ('*corners', one_of(POSITIONS)),
    ('*epsilon', positive_number), ('*parameter_bound', positive_number),
    ('*noise_std_fraction', positive_number),
    ('sinusoid.frequency', positive_number),
    ('sinusoid.amplitude_fraction', positive_number),
    ('*cross_value', non_negative_number),
    ('gradient_alignment.n', count(1)), ('gradient_alignment.n_test', count(1)),
    ('gradient_alignment.dim', count(1)),
    ('gradient_alignment.signal_dim', count(1)),
    ('*.lr', positive_number), ('*.l2', non_negative_number),
    ('*.std', non_negative_number), ('*low_std', non_negative_number),
    ('*noise_std', non_negative_number), ('*radius', positive_number),
    ('*max_iter', count(1)), ('*memory_size', count(1)),
    ('*.epochs', count(1)), ('gradient_alignment.gd.steps', count(1)),
    ('gradient_alignment.gd.batch_size', count(1)),
    ('gradient_alignment.gradpc.steps', count(1)),
    ('*tol', positive_number),
    ('model_kwargs.*', lambda v, c: (
        'must be a whole number >= 1' if _is_int(v) and v < 1 else None)),
)


# (field, the field it may not exceed): cross-field limits.
AT_MOST = (
    ('gradient_alignment.num_poisons', 'gradient_alignment.n'),
    ('gradient_alignment.signal_dim', 'gradient_alignment.dim'),
    ('gradient_alignment.gd.batch_size', 'gradient_alignment.n'),
)


def _get(config, path: str):
  node = config
  for part in path.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return None
    node = node[part]
  return node


def _leaves(node, prefix=()):
  """(dotted path, value) of every non-ConfigDict field, depth first."""
  for name in node.keys():
    value = node[name]
    path = prefix + (str(name),)
    if hasattr(value, 'keys') and not isinstance(value, dict):
      if path[0] != 'hparams':
        yield from _leaves(value, path)
    else:
      yield '.'.join(path), value


def _recipes(config):
  """(path, fields) of every recipe-like node: `recipe`, `pretrain`, and
  any `*.recipe` override (merged over the top-level recipe)."""
  base = config.recipe.to_dict() if 'recipe' in config else {}
  if base:
    yield 'recipe', base
  for path, _ in list(_leaves(config)):
    parts = path.split('.')
    if len(parts) >= 3 and parts[-2] == 'recipe':
      owner = '.'.join(parts[:-1])
      node = config
      for p in parts[:-1]:
        node = node[p]
      yield owner, {**base, **node.to_dict()}
  if 'pretrain' in config and config.pretrain.get('steps', 0) != 0:
    yield 'pretrain', config.pretrain.to_dict()


def check_recipe(path: str, fields: dict, config_flag: str = 'config'
                 ) -> None:
  from unlearnjax import training  # pylint: disable=g-import-not-at-top
  known = {f.name for f in dataclasses.fields(training.Recipe)}
  from unlearnjax import parallel  # pylint: disable=g-import-not-at-top
  try:
    rate = fields.get('learning_rate', 1.0)
    if not (_is_number(rate) and math.isfinite(rate) and rate > 0):
      # A study's model must train (Recipe itself allows 0: a frozen run).
      raise ConfigError(f'learning_rate={rate!r}: must be a finite number '
                        '> 0.')
    recipe = training.Recipe(**{k: v for k, v in fields.items() if k in known})
    parallel.check_batch_size(recipe.batch_size)
  except ConfigError as e:
    raise ConfigError(f'--{config_flag}.{path}.{e}') from None


def check_config(config, *, config_flag: str = 'config') -> None:
  """Raises ConfigError (one line) for the first bad field of `config`."""
  context = {'dataset': config.get('dataset')}
  context['num_classes'] = NUM_CLASSES.get(context['dataset'])
  for path, value in _leaves(config):
    for pattern, check in RULES:
      if fnmatch.fnmatchcase(path, pattern):
        problem = check(value, context)
        if problem:
          raise ConfigError(
              f'--{config_flag}.{path}={_show(value)}: {path} {problem}.')
        break
  for path, limit in AT_MOST:
    value, bound = _get(config, path), _get(config, limit)
    if value is not None and bound is not None and value > bound:
      raise ConfigError(f'--{config_flag}.{path}={value}: {path} must be at '
                        f'most {limit} ({bound}).')
  for node_path, node in _pairs(config):
    if node.get('class_a') == node.get('class_b'):
      raise ConfigError(
          f'--{config_flag}.{node_path}.class_b={node["class_b"]}: '
          f'{node_path}.class_a and class_b are the same class; interclass '
          'confusion swaps two different classes.')
  if config.get('pretrain') is not None and config.pretrain.get('steps', 0) < 0:
    raise ConfigError(f'--{config_flag}.pretrain.steps='
                      f'{config.pretrain.steps}: pretrain.steps must be >= 0 '
                      '(0: no pretraining).')
  for path, fields in _recipes(config):
    check_recipe(path, fields, config_flag)
  if 'hparams' in config:
    check_hparams(config.hparams, config_flag)
  one_shot = config.get('one_shot', None)
  if ('found_fractions' in config and not config.found_fractions
      and one_shot is False):
    raise ConfigError('config.found_fractions is empty and one_shot=False: '
                      'nothing to run; give a found fraction or set '
                      '--config.one_shot=True.')


def check_hparams(hparams, config_flag: str = 'config') -> None:
  """Every `hparams.<method>` names a registered method and its fields, and
  the values it pins make valid hparams (the dataclass's `__post_init__`,
  and its `validate()` where it has one)."""
  from unlearnjax.unlearn import get_method  # pylint: disable=g-import-not-at-top
  from unlearnjax.unlearn.registry import changed_fields  # pylint: disable=g-import-not-at-top
  for name in hparams:
    pinned = {}
    try:
      method = get_method(name)
      pinned = changed_fields(name, hparams[name])
      values = dataclasses.replace(method.hparams(), **pinned)
      if hasattr(values, 'validate'):
        values.validate()
    except ConfigError:
      raise
    except (ValueError, TypeError) as e:
      shown = ' '.join(f'--{config_flag}.hparams.{name}.{k}={v}'
                       for k, v in pinned.items())
      raise ConfigError(f'{shown or f"--{config_flag}.hparams.{name}"}: {e}'
                        ) from None


def _pairs(config, prefix=''):
  for name in config.keys():
    value = config[name]
    if name == 'hparams' or not hasattr(value, 'keys'):
      continue
    path = f'{prefix}{name}'
    if 'class_a' in value and 'class_b' in value:
      yield path, value
    yield from _pairs(value, path + '.')


def _show(value) -> str:
  if isinstance(value, (tuple, list)):
    return ','.join(map(str, value)) if value else '()'
  return str(value)


def check_workdir(workdir: str) -> None:
  """A workdir the sweep can write: a directory (created if missing) where a
  file can be created; raises ConfigError before any run is computed."""
  if not workdir:
    raise ConfigError('--workdir is empty; give a directory for the results.')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f'--workdir={workdir} is a file, not a directory; give '
                      'a directory (it is created if missing).')
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write-check-{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f'--workdir={workdir} cannot be written '
                      f'({e.strerror}); give a directory you can write to.'
                      ) from None


STUDY_FILE = 'STUDY'


def claim_workdir(workdir: str, study: str) -> None:
  """Marks `workdir` as `study`'s (the file `STUDY`), or refuses a workdir
  that holds another study's results: two studies' reports (report.md,
  table1.md, …) would overwrite each other."""
  path = os.path.join(workdir, STUDY_FILE)
  if os.path.exists(path):
    with open(path) as f:
      owner = f.read().strip()
    if owner and owner != study:
      raise ConfigError(
          f'--workdir={workdir} holds the {owner} study\'s results; run '
          f'{study} in its own workdir (e.g. --workdir={workdir.rstrip("/")}'
          f'-{study}).')
    return
  from unlearnjax import results  # pylint: disable=g-import-not-at-top
  for rows_path in results.shard_paths(workdir):
    for row in results.ResultsFile(rows_path).rows():
      owner = row.get('study') if isinstance(row, dict) else None
      if owner and owner != study:
        raise ConfigError(
            f'--workdir={workdir} holds the {owner} study\'s results; run '
            f'{study} in its own workdir.')
  with open(path, 'w') as f:
    f.write(study + '\n')
