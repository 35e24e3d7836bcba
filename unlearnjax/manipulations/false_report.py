"""A false report: nothing was manipulated, yet some samples are "identified".

Issue 12's safety check for expanding S_f (Goel et al. 2024 §2 ask whether
S_f can find the rest of S_m): when the identified samples are clean, an
expansion should add almost nothing and a correction should keep the
model's accuracy. S_m here is a uniform draw of clean training rows, left
unchanged (inputs and labels), so S_f ⊆ S_m is a false report. D_m and the
rest of the test set are both the whole clean test set, so Acc_corr and
Acc_retain are the clean test accuracy and `model_damage` is its change;
M* trains without S_m (|S_m| clean rows fewer).

Not a manipulation from the papers: the library's own control.
"""

from __future__ import annotations

from unlearnjax.data.split import Split
from unlearnjax.manipulations.base import Manipulation, poison_rows


def manipulate(train: Split, test: Split, *, seed: int,
               report_fraction: float = 0.02, num_reported: int = 0
               ) -> Manipulation:
  """Reports `num_reported` (or round(report_fraction·|S_tr|)) clean rows.

  Args:
    report_fraction: |S_m| / |S_tr| (the digits' BadNet default, 2%).
    num_reported: |S_m| directly; 0 uses `report_fraction`.
  """
  rows = poison_rows(train, seed=seed, purpose='false_report/rows',
                     poison_fraction=report_fraction,
                     num_poisons=num_reported, what='false_report')
  return Manipulation(
      train=train, manipulated=rows,
      manipulated_clean_labels=train.labels[rows].copy(),
      affected=test, unaffected=test,
      info={'num_reported': int(rows.size)})
