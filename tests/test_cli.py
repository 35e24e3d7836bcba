"""cli.split_comma_lists: `--config.methods=a,b` overrides become tuples."""

import ml_collections

from unlearnjax import cli


def test_comma_separated_names_are_split_in_every_tuple_field():
  config = ml_collections.ConfigDict({
      'methods': ('gd,ngd , scrub',), 'seeds': (0, 1), 'name': 'a,b',
      'inner': {'poisons': ('x', 'y,z')}, 'empty': ()})
  config.lock()
  cli.split_comma_lists(config)
  assert config.methods == ('gd', 'ngd', 'scrub')
  assert config.seeds == (0, 1)
  assert config.name == 'a,b'          # plain strings are left alone
  assert config.inner.poisons == ('x', 'y', 'z')
  assert config.empty == ()
