"""Expand-then-correct in the corrective study (issue 12): rows carry the
expansion's precision and recall against the true S_m, and the false-report
manipulation (clean S_f) runs as a safety check."""

import numpy as np
import pytest

from experiments.configs import corrective as corrective_config
from unlearnjax import data
from unlearnjax.manipulations import get_manipulation
from unlearnjax.reports import corrective as corrective_report
from unlearnjax.studies import corrective


class Rows(list):
  workdir: str


def test_false_report_changes_nothing_and_reports_clean_rows(digits):
  train, _, test = digits
  m = get_manipulation('false_report')(train, test, seed=3,
                                       report_fraction=0.05)
  assert m.manipulated.size == round(0.05 * len(train))
  np.testing.assert_array_equal(m.train.images, train.images)
  np.testing.assert_array_equal(m.train.labels, train.labels)
  np.testing.assert_array_equal(m.manipulated_clean_labels,
                                train.labels[m.manipulated])
  assert len(m.affected) == len(m.unaffected) == len(test)


@pytest.fixture(scope='module')
def rows(tmp_path_factory):
  config = corrective_config.get_config('smoke')
  config.manipulations = ('badnet', 'false_report')
  config.methods = ('retrain', 'expand_retrain')
  config.found_fractions = (0.5,)
  config.one_shot = False
  config.curves_every = 0
  workdir = str(tmp_path_factory.mktemp('expansion'))
  found = Rows(corrective.run(config, workdir))
  found.workdir = workdir
  return found


def _row(rows, manipulation, method):
  [row] = [r for r in rows if r['manipulation'] == manipulation
           and r['method'] == method]
  return row


def test_expanded_rows_report_precision_and_recall_against_s_m(rows):
  row = _row(rows, 'badnet', 'expand_retrain')
  assert 'expanded_forget_rows' not in row  # summarised, not stored
  assert row['expansion_found_recall'] == pytest.approx(
      row['n_forget'] / row['n_manipulated'])
  # The expansion finds poisons beyond S_f (a stub returning S_f would not).
  assert row['expansion_recall'] > row['expansion_found_recall']
  assert row['expansion_true_added'] > 0
  assert 0 <= row['expansion_precision'] <= 1
  assert row['expansion_expected_false_positives'] > 0
  assert 'expansion_recall' not in _row(rows, 'badnet', 'retrain')


def test_a_false_report_is_measured_on_the_clean_test_set(rows):
  row = _row(rows, 'false_report', 'expand_retrain')
  assert row['expansion_recall'] >= row['expansion_found_recall']
  assert np.isfinite(row['model_damage'])
  assert row['acc_corr'] == pytest.approx(row['acc_retain'])


def test_the_report_has_the_expansion_table(rows):
  import os  # pylint: disable=g-import-not-at-top
  corrective_report.write_corrective_report(list(rows), rows.workdir)
  text = open(os.path.join(rows.workdir, 'expansion.md')).read()
  recall = _row(rows, 'badnet', 'expand_retrain')['expansion_recall']
  assert 'expansion: recall %' in text and 'S_f alone: recall %' in text
  assert f'{100 * recall:.1f}' in text
  assert 'Expand' in text and 'False report' in text
