import jax
import numpy as np
import pytest

from unlearnjax import parallel, training
from conftest import tree_allclose


def test_runs_on_the_four_device_mesh():
  assert jax.device_count() == 4
  assert parallel.data_mesh().shape['data'] == 4
  batch = parallel.shard_batch(np.zeros((8, 3), np.float32))
  assert len(batch.sharding.device_set) == 4


def test_schedule_warms_up_then_decays_linearly():
  recipe = training.Recipe(steps=1000, learning_rate=0.1)
  schedule = training.learning_rate_schedule(recipe)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(10)), 0.1, rtol=1e-6)  # 1% warm-up
  # Linear to 0 at 1.25 x steps: at the last step, 20% of the peak is left.
  np.testing.assert_allclose(float(schedule(1000)), 0.1 * 250 / 1240,
                             rtol=1e-4)
  assert float(schedule(500)) > float(schedule(900))


def test_fit_learns_and_is_deterministic(digits, tiny_model, tiny_recipe):
  train, validation, _ = digits
  a = training.fit(tiny_model, tiny_recipe, train, jax.random.key(0))
  b = training.fit(tiny_model, tiny_recipe, train, jax.random.key(0))
  tree_allclose(a, b, rtol=0, atol=0)
  assert training.accuracy(tiny_model, a, validation) > 0.8
  c = training.fit(tiny_model, tiny_recipe, train, jax.random.key(1))
  assert not np.allclose(jax.tree.leaves(a['params'])[0],
                         jax.tree.leaves(c['params'])[0])


def test_fit_updates_batchnorm_statistics(digits, tiny_model):
  train, _, _ = digits
  recipe = training.Recipe(steps=3, batch_size=32)
  init = training.init_variables(tiny_model, jax.random.key(0),
                                 train.image_shape)
  out = training.fit(tiny_model, recipe, train, jax.random.key(0),
                     variables=init)
  means = [x for p, x in jax.tree_util.tree_leaves_with_path(out['batch_stats'])
           if 'mean' in jax.tree_util.keystr(p)]
  assert means and any(np.abs(m).sum() > 0 for m in means)


def test_step_compiles_once_per_model_and_recipe(digits, tiny_model):
  train, _, _ = digits
  recipe = training.Recipe(steps=4, batch_size=32)
  training.fit(tiny_model, recipe, train, jax.random.key(0))
  step = training.jitted_train_step(tiny_model, recipe)
  compiled = step._cache_size()
  training.fit(tiny_model, recipe, train, jax.random.key(1),
               indices=np.arange(100))
  assert training.jitted_train_step(tiny_model, recipe) is step
  assert step._cache_size() == compiled


def test_nan_in_training_raises_a_clear_error(digits, tiny_model):
  train, _, _ = digits
  bad = train.replace(images=np.full_like(train.images, np.nan))
  with pytest.raises(FloatingPointError, match='learning rate'):
    training.fit(tiny_model, training.Recipe(steps=10, batch_size=32), bad,
                 jax.random.key(0))


def test_batch_size_must_split_over_devices(digits, tiny_model):
  train, _, _ = digits
  with pytest.raises(ValueError, match='divisible'):
    training.fit(tiny_model, training.Recipe(steps=1, batch_size=30), train,
                 jax.random.key(0))


def test_index_batches_cover_an_epoch_and_handle_tiny_sets():
  rng = np.random.default_rng(0)
  batches = training.index_batches(10, 5, rng)
  epoch = np.concatenate([next(batches), next(batches)])
  assert sorted(epoch) == list(range(10))
  tiny = training.index_batches(3, 8, rng)
  assert next(tiny).shape == (8,) and set(next(tiny)) <= {0, 1, 2}
  with pytest.raises(ValueError, match='empty'):
    next(training.index_batches(0, 8, rng))


def test_predict_pads_and_matches_apply(digits, trained, tiny_model):
  _, _, test = digits
  _, _, variables = trained
  images = test.images[:37]
  logits = training.predict_logits(tiny_model, variables, images,
                                   batch_size=16)
  direct = tiny_model.apply(variables, images, train=False)
  np.testing.assert_allclose(logits, direct, rtol=1e-4, atol=1e-5)


def test_sharded_step_equals_single_device_step(digits, tiny_model):
  train, _, _ = digits
  recipe = training.Recipe(steps=10, batch_size=16)
  tx = training.make_optimizer(recipe)
  state = training.create_train_state(
      training.init_variables(tiny_model, jax.random.key(0),
                              train.image_shape), tx)
  batch = {'image': train.images[:16], 'label': train.labels[:16]}
  step = jax.jit(lambda s, b: training.train_step(s, b, model=tiny_model,
                                                   tx=tx))
  single, _ = step(state, batch)
  sharded, _ = step(parallel.replicate(state), parallel.shard_batch(batch))
  tree_allclose(single, sharded, rtol=1e-5, atol=1e-6)


def test_fit_resumes_from_its_checkpoint_to_the_same_result(
    digits, tiny_model, tmp_path, monkeypatch):
  train, _, _ = digits
  recipe = training.Recipe(steps=30, batch_size=32)
  straight = training.fit(tiny_model, recipe, train, jax.random.key(0))
  path = str(tmp_path / 'partial')
  calls = {'n': 0}
  original_run_steps = training.run_steps

  def killed_after_one_segment(*args, **kwargs):
    calls['n'] += 1
    if calls['n'] == 2:
      raise KeyboardInterrupt  # a kill after the first checkpoint
    return original_run_steps(*args, **kwargs)

  monkeypatch.setattr(training, 'run_steps', killed_after_one_segment)
  with pytest.raises(KeyboardInterrupt):
    training.fit(tiny_model, recipe, train, jax.random.key(0),
                 checkpoint_dir=path, checkpoint_every=10)
  ran = []

  def counting(step_fn, state, make_batch, steps, **kwargs):
    ran.append(steps)
    return original_run_steps(step_fn, state, make_batch, steps, **kwargs)

  monkeypatch.setattr(training, 'run_steps', counting)
  resumed = training.fit(tiny_model, recipe, train, jax.random.key(0),
                         checkpoint_dir=path, checkpoint_every=10)
  assert sum(ran) == 20  # the first 10 steps were not redone
  tree_allclose(resumed, straight, rtol=1e-6, atol=1e-7)
