"""Test set-up: 4 simulated CPU devices (the sharded code path) and absl flags."""

import os

# Before JAX starts: several devices, so every test runs the data-parallel path.
# The 4 simulated devices share 2 cores in CI: give a device that is starved
# of CPU time minutes, not XLA's default, to reach a collective before XLA
# aborts the process; warn (on stderr, not captured) after 60 s.
_XLA_TEST_FLAGS = ('--xla_force_host_platform_device_count=4',
                   '--xla_cpu_collective_call_terminate_timeout_seconds=900',
                   '--xla_cpu_collective_timeout_seconds=900',
                   '--xla_cpu_collective_call_warn_stuck_timeout_seconds=60')
os.environ['XLA_FLAGS'] = ' '.join(
    [os.environ.get('XLA_FLAGS', '')]
    + [f for f in _XLA_TEST_FLAGS
       if f.split('=')[0] not in os.environ.get('XLA_FLAGS', '')]).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import sys  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope='session')
def digits():
  """(train, validation, test) of the embedded digits."""
  from unlearnjax import data  # pylint: disable=g-import-not-at-top
  train, test = data.load_dataset('digits')
  train, validation = data.carve_validation(train, 0.1, seed=0)
  return train, validation, test


@pytest.fixture(scope='session')
def tiny_model():
  from unlearnjax import models  # pylint: disable=g-import-not-at-top
  return models.get_model('small_cnn', 10, width=8)


@pytest.fixture(scope='session')
def tiny_recipe():
  from unlearnjax import training  # pylint: disable=g-import-not-at-top
  return training.Recipe(steps=60, batch_size=64, learning_rate=0.05)


@pytest.fixture(scope='session')
def trained(digits, tiny_model, tiny_recipe):
  """A small CNN trained on a BadNet-poisoned digits set (shared by tests)."""
  import jax  # pylint: disable=g-import-not-at-top
  from unlearnjax import training  # pylint: disable=g-import-not-at-top
  from unlearnjax.manipulations import badnet  # pylint: disable=g-import-not-at-top
  train, validation, test = digits
  manipulation = badnet.manipulate(train, test, seed=0, poison_fraction=0.03)
  variables = training.fit(tiny_model, tiny_recipe, manipulation.train,
                           jax.random.key(0))
  return manipulation, validation, variables


def tree_allclose(a, b, **kw):
  import jax  # pylint: disable=g-import-not-at-top
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)
