"""Method registry: one line per method (and the label figures and tables
give it)."""

from __future__ import annotations

import dataclasses
import typing

from unlearnjax.unlearn import bad_teacher, cf_k, eu_k, finetune, gd
from unlearnjax.unlearn import gradient_ascent, neggrad_plus, ngd, ptn, retrain
from unlearnjax.unlearn import fisher_forgetting, gar, grda, pgu, reload
from unlearnjax.unlearn import salun, scrub, ssd
from unlearnjax.expansion.method import expand_variants
from unlearnjax.unlearn.base import Method


def _label(method: Method, label: str) -> Method:
  """`method` with the name figures and tables give it (`Method.label`);
  a report may still print a paper's own name (`reports.base.Labels`)."""
  return dataclasses.replace(method, label=label)


METHODS: dict[str, Method] = {
    'retrain': _label(retrain.METHOD, 'Retrain'),
    'finetune': _label(finetune.METHOD, 'Finetune'),
    'ssd': _label(ssd.METHOD, 'SSD'),             # Goel's code: per-batch
    'ssd_exact': _label(ssd.method('ssd_exact', estimator='exact'),
                        'SSD (exact importances)'),  # per-sample
    'bad_teacher': _label(bad_teacher.METHOD, 'BadT'),
    'scrub': _label(scrub.METHOD, 'SCRUB'),
    'ptn_ssd': _label(ptn.method('ptn_ssd', 'fisher'), 'PTN+SSD'),  # Potion
    'ptn_lf': _label(ptn.method('ptn_lf', 'lf'), 'PTN+LF'),         # Potion
    'ptn_xlf': _label(ptn.method('ptn_xlf', 'xlf'), 'PTN+XLF'),     # Potion
    'ptn_xlf_exact': _label(ptn.method('ptn_xlf_exact', 'xlf', ptn.EXACT),
                            'PTN+XLF (exact, I_D over S_tr)'),  # Alg. 1
    'gd': _label(gd.METHOD, 'GD'),                # Pawelczyk A.2.1
    'ngd': _label(ngd.METHOD, 'NGD'),             # Pawelczyk A.2.2
    'gradient_ascent': _label(gradient_ascent.METHOD, 'GA'),  # Pawelczyk A.2.3
    'eu_k': _label(eu_k.METHOD, 'EU-k'),          # Pawelczyk A.2.4
    'cf_k': _label(cf_k.METHOD, 'CF-k'),          # Pawelczyk A.2.5
    'neggrad_plus': _label(neggrad_plus.METHOD, 'NegGrad+'),  # Pawelczyk A.2.7
    'reload': _label(reload.METHOD, 'RELOAD'),    # RELOAD Alg. 1
    'gar': _label(gar.METHOD, 'GAR'),             # RELOAD §4.3 baseline
    'grda': _label(grda.METHOD, 'GRDA'),          # RELOAD §4.3 baseline
    'salun': _label(salun.METHOD, 'SalUn'),       # Fan et al.; RELOAD §4.2
    'fisher_forgetting': _label(fisher_forgetting.METHOD,
                                'Fisher'),        # Golatkar; RELOAD §4.2
    'pgu': _label(pgu.METHOD, 'PGU'),             # PGU §3 (forget, λ > 0)
    'pgu_depoison': _label(pgu.DEPOISON_METHOD,
                           'PGU (de-poisoning)'),  # PGU §3.2.3/§4.5 (λ < 0)
}
# Expand-then-correct (Goel §2; unlearnjax/expansion): 'expand_<name>'.
METHODS.update(expand_variants(METHODS, ('retrain', 'finetune', 'ssd',
                                         'ptn_xlf', 'ptn_xlf_exact', 'scrub')))


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f'Unknown method {name!r}; valid names: '
                     f'{", ".join(METHODS)}.')
  return METHODS[name]


def default_hparams(name: str) -> dict:
  """Method `name`'s default hparams as a plain dict (what a config's
  `hparams.<name>` starts from)."""
  return dataclasses.asdict(get_method(name).hparams())


def hparams_field_types(name: str) -> dict[str, type]:
  """Field -> the type a config override must have (the `X` of `X | None`)."""
  cls = get_method(name).hparams
  hints = typing.get_type_hints(cls)
  types = {}
  for field in dataclasses.fields(cls):
    hint = hints.get(field.name, object)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    types[field.name] = args[0] if args else hint
  return types


def check_overrides(name: str, overrides) -> None:
  """Raises ValueError naming the valid fields if `overrides` has others."""
  fields = [f.name for f in dataclasses.fields(get_method(name).hparams)]
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ValueError(
        f'config.hparams.{name} has no field{"s" if len(unknown) > 1 else ""} '
        f'{", ".join(unknown)}; valid: {", ".join(fields) or "(none)"}.')


def changed_fields(name: str, values) -> dict:
  """The entries of `values` (a config's `hparams.<name>`, which lists every
  field) that differ from the method's defaults: these pin a field, the
  others leave it to the method's grid."""
  check_overrides(name, values)
  defaults = default_hparams(name)
  return {k: v for k, v in dict(values).items() if defaults.get(k) != v}


def check_all_overrides(hparams) -> None:
  """Every entry of a config's `hparams` names a registered method and only
  its fields; raises ValueError naming what is valid."""
  for name in hparams:
    get_method(name)
    check_overrides(name, hparams[name])
