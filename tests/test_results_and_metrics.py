import json
import math

import numpy as np
import pytest

from unlearnjax import checkpoint, metrics
from unlearnjax.results import ResultsFile, run_key
from conftest import tree_allclose


def test_results_append_and_resume(tmp_path):
  results = ResultsFile(str(tmp_path / 'r' / 'results.jsonl'))
  assert results.rows() == [] and results.done_keys() == set()
  key = run_key({'method': 'ssd', 'seed': 0})
  assert key == run_key({'seed': 0, 'method': 'ssd'})  # order-free
  results.append({'run_key': key, 'acc': np.float32(0.5)})
  assert results.done_keys() == {key}
  with pytest.raises(ValueError):
    results.append({'acc': 1.0})


def test_a_cut_line_is_ignored_and_mended(tmp_path):
  path = tmp_path / 'results.jsonl'
  path.write_text(json.dumps({'run_key': 'a'}) + '\n{"run_key": "b", "ac')
  results = ResultsFile(str(path))
  with pytest.warns(UserWarning):
    assert results.done_keys() == {'a'}
  results.append({'run_key': 'c'})
  with pytest.warns(UserWarning):
    assert results.done_keys() == {'a', 'c'}


def test_checkpoint_roundtrip(tmp_path, trained):
  _, _, variables = trained
  path = str(tmp_path / 'ckpt')
  assert not checkpoint.exists(path)
  checkpoint.save(path, variables, {'seconds': 1.5, 'seed': 3})
  assert checkpoint.exists(path)
  restored, meta = checkpoint.restore(path, variables)
  tree_allclose(restored, variables, rtol=0, atol=0)
  assert meta == {'seconds': 1.5, 'seed': 3}


def test_poison_healed_and_model_damage():
  assert metrics.poison_healed(0.45, 0.9) == pytest.approx(50.0)
  assert math.isnan(metrics.poison_healed(0.5, 0.0))
  assert metrics.model_damage(0.90, 0.95) == pytest.approx(-5.0)


def test_goel_score_and_changed_share():
  assert metrics.changed_share([0, 1, 2, 3], [0, 1, 0, 0]) == 0.5
  assert metrics.goel_selection_score(0.9, 0.5) == pytest.approx(0.7)


def test_corrective_accuracies_match_the_definitions(trained, tiny_model):
  from unlearnjax import training  # pylint: disable=g-import-not-at-top
  manipulation, _, variables = trained
  accs = metrics.corrective_accuracies(tiny_model, variables, manipulation)
  predict = lambda images: training.predict(tiny_model, variables, images)
  np.testing.assert_allclose(accs['acc_corr'], np.mean(
      predict(manipulation.affected.images) == manipulation.affected.labels))
  np.testing.assert_allclose(accs['acc_retain'], np.mean(
      predict(manipulation.unaffected.images)
      == manipulation.unaffected.labels))
  rows = manipulation.manipulated
  np.testing.assert_allclose(accs['acc_manipulated_train'], np.mean(
      predict(manipulation.train.images[rows])
      == manipulation.manipulated_clean_labels))
