"""Method registry: one line per method."""

from __future__ import annotations

import dataclasses
import typing

from unlearnjax.unlearn import bad_teacher, cf_k, eu_k, finetune, gd
from unlearnjax.unlearn import gradient_ascent, neggrad_plus, ngd, ptn, retrain
from unlearnjax.unlearn import fisher_forgetting, gar, grda, pgu, reload
from unlearnjax.unlearn import salun, scrub, ssd
from unlearnjax.unlearn.base import Method

METHODS: dict[str, Method] = {
    'retrain': retrain.METHOD,
    'finetune': finetune.METHOD,
    'ssd': ssd.METHOD,                            # Goel's code: per-batch
    'ssd_exact': ssd.method('ssd_exact', estimator='exact'),  # per-sample
    'bad_teacher': bad_teacher.METHOD,
    'scrub': scrub.METHOD,
    'ptn_ssd': ptn.method('ptn_ssd', 'fisher'),   # Potion: PTN + SSD
    'ptn_lf': ptn.method('ptn_lf', 'lf'),         # Potion: PTN + LF
    'ptn_xlf': ptn.method('ptn_xlf', 'xlf'),      # Potion: PTN + XLF
    'ptn_xlf_exact': ptn.method('ptn_xlf_exact', 'xlf', ptn.EXACT),  # Alg. 1
    'gd': gd.METHOD,                              # Pawelczyk A.2.1
    'ngd': ngd.METHOD,                            # Pawelczyk A.2.2
    'gradient_ascent': gradient_ascent.METHOD,    # Pawelczyk A.2.3
    'eu_k': eu_k.METHOD,                          # Pawelczyk A.2.4
    'cf_k': cf_k.METHOD,                          # Pawelczyk A.2.5
    'neggrad_plus': neggrad_plus.METHOD,          # Pawelczyk A.2.7
    'reload': reload.METHOD,                      # RELOAD Alg. 1
    'gar': gar.METHOD,                            # RELOAD §4.3 baseline
    'grda': grda.METHOD,                          # RELOAD §4.3 baseline
    'salun': salun.METHOD,                        # Fan et al.; RELOAD §4.2
    'fisher_forgetting': fisher_forgetting.METHOD,  # Golatkar; RELOAD §4.2
    'pgu': pgu.METHOD,                            # PGU §3 (forget, λ > 0)
    'pgu_depoison': pgu.DEPOISON_METHOD,          # PGU §3.2.3/§4.5 (λ < 0)
}


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
