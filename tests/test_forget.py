import numpy as np
import pytest

from unlearnjax import forget


def test_forget_is_a_seeded_uniform_subset():
  manipulated = np.arange(100, 150)
  sets = {f: forget.sample_forget(manipulated, f, seed=0)
          for f in (0.1, 0.2, 0.5, 1.0)}
  for fraction, rows in sets.items():
    assert rows.size == int(np.ceil(fraction * 50))
    assert set(rows) <= set(manipulated)
  assert set(sets[0.1]) <= set(sets[0.2]) <= set(sets[0.5])
  np.testing.assert_array_equal(sets[1.0], manipulated)
  np.testing.assert_array_equal(forget.sample_forget(manipulated, 0.3, 0),
                                forget.sample_forget(manipulated, 0.3, 0))
  assert not np.array_equal(forget.sample_forget(manipulated, 0.3, 0),
                            forget.sample_forget(manipulated, 0.3, 1))


def test_one_shot_is_one_sample():
  rows = forget.sample_forget(np.arange(10, 20), forget.ONE_SHOT, seed=0)
  assert rows.size == 1 and 10 <= rows[0] < 20


@pytest.mark.parametrize('fraction', [0.0, -0.1, 1.01, 2, 'half'])
def test_bad_fraction_is_rejected(fraction):
  with pytest.raises(ValueError, match=r'\(0, 1\]'):
    forget.sample_forget(np.arange(10), fraction, seed=0)


def test_empty_manipulated_set_is_rejected():
  with pytest.raises(ValueError, match='empty'):
    forget.sample_forget(np.array([], np.int64), 0.5, seed=0)


def test_retain_is_the_complement():
  retain = forget.retain_indices(10, np.array([2, 5]))
  np.testing.assert_array_equal(retain, [0, 1, 3, 4, 6, 7, 8, 9])
