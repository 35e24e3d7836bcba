import jax
import jax.numpy as jnp
import numpy as np

from unlearnjax import grads, importance
from conftest import tree_allclose


def _loop_grads(loss, params, images, labels):
  return [jax.grad(loss)(params, x, y) for x, y in zip(images, labels)]


def test_per_sample_grads_equal_the_loop(trained, tiny_model):
  manipulation, _, variables = trained
  images = manipulation.train.images[:6]
  labels = manipulation.train.labels[:6]
  loss = grads.example_cross_entropy(tiny_model, variables['batch_stats'])
  batched = grads.per_sample_grads(loss, variables['params'], images, labels)
  for i, expected in enumerate(_loop_grads(loss, variables['params'], images,
                                           labels)):
    tree_allclose(jax.tree.map(lambda g: g[i], batched), expected, rtol=1e-4,
                  atol=1e-6)


def test_per_sample_grads_do_not_depend_on_the_batch(trained, tiny_model):
  """Evaluation-mode BatchNorm: sample 0's gradient ignores its neighbours."""
  manipulation, _, variables = trained
  images, labels = manipulation.train.images, manipulation.train.labels
  loss = grads.example_cross_entropy(tiny_model, variables['batch_stats'])
  a = grads.per_sample_grads(loss, variables['params'], images[:4], labels[:4])
  b = grads.per_sample_grads(loss, variables['params'],
                             np.concatenate([images[:1], images[50:53]]),
                             np.concatenate([labels[:1], labels[50:53]]))
  tree_allclose(jax.tree.map(lambda g: g[0], a),
                jax.tree.map(lambda g: g[0], b), rtol=1e-5, atol=1e-7)


def test_input_grads_equal_the_loop(trained, tiny_model):
  manipulation, _, variables = trained
  images = manipulation.train.images[:5]
  labels = manipulation.train.labels[:5]
  loss = grads.example_cross_entropy(tiny_model, variables['batch_stats'])
  batched = grads.per_sample_input_grads(loss, variables['params'], images,
                                         labels)
  for i in range(5):
    expected = jax.grad(loss, argnums=1)(variables['params'], images[i],
                                         labels[i])
    np.testing.assert_allclose(batched[i], expected, rtol=1e-4, atol=1e-7)


def test_mean_over_samples_masks_the_padding(trained, tiny_model):
  manipulation, _, variables = trained
  images = manipulation.train.images[:13]  # 13 = 8 + 5: one padded chunk
  labels = manipulation.train.labels[:13]
  loss = grads.example_cross_entropy(tiny_model, variables['batch_stats'])
  loop = _loop_grads(loss, variables['params'], images, labels)
  expected = jax.tree.map(lambda *g: np.mean(np.square(np.stack(g)), 0), *loop)
  chunked = importance.fisher_diagonal_exact(tiny_model, variables, images,
                                             labels, chunk_size=8)
  tree_allclose(chunked, expected, rtol=1e-4, atol=1e-9)


def test_per_batch_estimate_equals_exact_at_batch_size_one(trained,
                                                           tiny_model):
  manipulation, _, variables = trained
  images = manipulation.train.images[:12]
  labels = manipulation.train.labels[:12]
  exact = importance.fisher_diagonal(tiny_model, variables, images, labels,
                                     estimator='exact')
  # Batches are padded to a multiple of the 4 devices and masked, so a
  # batch of one is one real sample plus three masked rows.
  per_batch = importance.fisher_diagonal_per_batch(tiny_model, variables,
                                                   images, labels,
                                                   batch_size=1)
  tree_allclose(per_batch, exact, rtol=1e-4, atol=1e-9)
  larger = importance.fisher_diagonal(tiny_model, variables, images, labels,
                                      estimator='per_batch', batch_size=12)
  # With a real batch the estimate is that of the mean gradient: smaller.
  total = lambda t: sum(float(jnp.sum(x)) for x in jax.tree.leaves(t))
  assert total(larger) < total(exact)
