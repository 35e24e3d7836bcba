"""Method registry: one line per method."""

from __future__ import annotations

from unlearnjax.unlearn import bad_teacher, finetune, ptn, retrain, scrub, ssd
from unlearnjax.unlearn.base import Method

METHODS: dict[str, Method] = {
    'retrain': retrain.METHOD,
    'finetune': finetune.METHOD,
    'ssd': ssd.METHOD,
    'bad_teacher': bad_teacher.METHOD,
    'scrub': scrub.METHOD,
    'ptn_ssd': ptn.method('ptn_ssd', 'fisher'),   # Potion: PTN + SSD
    'ptn_lf': ptn.method('ptn_lf', 'lf'),         # Potion: PTN + LF
    'ptn_xlf': ptn.method('ptn_xlf', 'xlf'),      # Potion: PTN + XLF
}


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f'Unknown method {name!r}; valid names: '
                     f'{", ".join(METHODS)}.')
  return METHODS[name]
