r"""Convex solvers of Pawelczyk et al. 2024 §6 and App. A.1.3, C (the
`why_fails` study): objectives with unique minimisers, so that "the model
after exact unlearning" θ(S') of a subset S' is a computable function of S'.

* Multinomial logistic regression on fixed features (App. C.1): the
  objective (`logistic_objective`), its optimum by L-BFGS (`fit_logistic`),
  and θ as one identifiable vector (`flat_parameters`).
* Ridge / least-squares regression (App. C.2): sufficient statistics of a
  subset (`normal_equations`) and the closed-form optimum
  (`ridge_from_normal`, `ridge_fit`), so removing samples is a subtraction of
  their statistics.
* Indiscriminate poisons for linear regression (App. A.1.3): GradPC's target
  θ_low (`gradpc`) and Gradient Canceling's poison inputs
  (`gradient_canceling`, Alg. 2 / Eq. 4).
* Mini-batch gradient descent on clean data with the per-step cosine to a
  desired shift (`clean_gradient_descent`, Fig. 5).

Every solver is a pure jitted JAX function of explicit inputs (and PRNG keys
where it draws); callers run them under `jax.enable_x64(True)` so that the
optima are resolved far below the model shifts being measured.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu


# --------------------------------------------------------------------------
# Logistic regression on fixed features (App. C.1).
# --------------------------------------------------------------------------


def logistic_objective(params, features, labels, weights, l2: float,
                       n_ref: float):
  """(1/n_ref) Σ_i w_i CE(W^T x_i + b, y_i) + (l2/2) ‖W‖² (App. C.1's model).

  `weights` (0/1) select the training subset with fixed shapes, so every
  subset S' ⊂ S_corr is one jit compilation; `n_ref` = |S_corr| stays fixed
  across subsets, so removing samples changes the data term only (the same
  per-sample regularisation as scikit-learn's C = 1 / (l2 · n_ref)). The bias
  is not penalised, as in scikit-learn.
  """
  logits = features @ params['w'] + params['b']
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return (jnp.sum(weights * ce) / n_ref
          + 0.5 * l2 * jnp.sum(jnp.square(params['w'])))


@functools.partial(jax.jit,
                   static_argnames=('num_classes', 'max_iter', 'memory_size'))
def fit_logistic(features, labels, weights, l2, n_ref, tol, *,
                 num_classes: int, max_iter: int = 1000, memory_size: int = 10):
  """The unique optimum of `logistic_objective` by L-BFGS (optax.lbfgs with
  its zoom line search), iterated until ‖∇f‖₂ < `tol` or `max_iter`.

  Strictly convex in W (l2 > 0); the unpenalised bias is unique up to a
  constant shared by all classes (softmax invariance), which the solver never
  moves (∑_c ∂f/∂b_c = 0) from its zero start and `flat_parameters` removes.
  (Solve subsets one call each: on CPU a vmapped while-loop with a line
  search is ~7x slower than the calls in sequence.)

  Returns:
    (params {'w': (d, C), 'b': (C,)}, final gradient norm, iterations).
  """
  dim = features.shape[1]
  params = {'w': jnp.zeros((dim, num_classes), features.dtype),
            'b': jnp.zeros((num_classes,), features.dtype)}
  fun = functools.partial(logistic_objective, features=features, labels=labels,
                          weights=weights, l2=l2, n_ref=n_ref)
  solver = optax.lbfgs(memory_size=memory_size)
  value_and_grad = optax.value_and_grad_from_state(fun)

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value,
                                   grad=grad, value_fn=fun)
    return optax.apply_updates(params, updates), state

  def keep_going(carry):
    _, state = carry
    count = otu.tree_get(state, 'count')
    grad_norm = otu.tree_norm(otu.tree_get(state, 'grad'))
    return (count == 0) | ((count < max_iter) & (grad_norm >= tol))

  params, state = jax.lax.while_loop(keep_going, step,
                                     (params, solver.init(params)))
  grad_norm = otu.tree_norm(jax.grad(fun)(params))
  return params, grad_norm, otu.tree_get(state, 'count')


def flat_parameters(params) -> jax.Array:
  """θ as one vector: W and the class-centred bias (its identifiable part)."""
  b = params['b'] - jnp.mean(params['b'], axis=-1, keepdims=True)
  return jnp.concatenate([params['w'].reshape(*params['w'].shape[:-2], -1), b],
                         axis=-1)


# --------------------------------------------------------------------------
# Ridge regression by its normal equations (App. C.2).
# --------------------------------------------------------------------------


@jax.jit
def normal_equations(x, y, weights):
  """(Σ w_i x_i x_iᵀ, Σ w_i y_i x_i): the sufficient statistics of a subset."""
  xw = x * weights[:, None]
  return xw.T @ x, xw.T @ y


@jax.jit
def ridge_from_normal(gram, moment, l2, n_ref):
  """argmin_θ ½ Σ w_i (x_iᵀθ − y_i)² + ½ l2 n_ref ‖θ‖² (closed form).

  With l2 = 0 and a singular Gram matrix, the minimum-norm least-squares
  solution (an eigendecomposition pseudo-inverse, as `numpy.linalg.lstsq`
  returns); otherwise a linear solve.
  """
  a = gram + l2 * n_ref * jnp.eye(gram.shape[0], dtype=gram.dtype)

  def pinv_solve():
    evals, evecs = jnp.linalg.eigh(a)
    cutoff = 1e-10 * jnp.max(evals)
    inv = jnp.where(evals > cutoff, 1.0 / jnp.where(evals > cutoff, evals, 1.0),
                    0.0)
    return evecs @ (inv * (evecs.T @ moment))

  return jax.lax.cond(l2 > 0, lambda: jnp.linalg.solve(a, moment), pinv_solve)


def ridge_fit(x, y, weights, l2, n_ref):
  """θ(S') for the subset `weights` selects (see `ridge_from_normal`)."""
  gram, moment = normal_equations(x, y, weights)
  return ridge_from_normal(gram, moment, l2, n_ref)


# --------------------------------------------------------------------------
# Gradient Canceling poisons for linear regression (App. A.1.3).
# --------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=('steps',))
def gradpc(key, theta_clean, x_test, y_test, *, radius: float, steps: int,
           lr: float):
  """θ_low of Gradient Canceling (App. A.1.3): GradPC (Sun et al. 2020) as
  projected gradient ascent on the test loss ½ mean (xᵀθ − y)² inside the ℓ2
  ball of radius ε_w (the paper: 1) around the clean parameters, from a
  random point on its sphere (at θ_clean itself the ascent direction is 0)."""
  u = jax.random.normal(key, theta_clean.shape, theta_clean.dtype)
  theta = theta_clean + radius * u / jnp.linalg.norm(u)

  def test_loss(t):
    return 0.5 * jnp.mean(jnp.square(x_test @ t - y_test))

  def body(_, theta):
    theta = theta + lr * jax.grad(test_loss)(theta)
    delta = theta - theta_clean
    norm = jnp.linalg.norm(delta)
    return theta_clean + delta * jnp.minimum(1.0, radius / norm)

  return jax.lax.fori_loop(0, steps, body, theta)


@functools.partial(jax.jit, static_argnames=('epochs',))
def gradient_canceling(theta_low, clean_grad, x_init, y_poison, *, lr: float,
                       epochs: int):
  """Alg. 2 (App. A.1.3) for linear regression: perturb the poisons' inputs
  (labels kept) so θ_low has a vanishing gradient on the corrupted data,

    min_Δ ½ ‖ĝ_clean(θ_low) + Ê_poison[∇ℓ((x + Δ(x), y); θ_low)]‖²   (Eq. 4),

  with ĝ_clean the clean training-objective gradient (data mean plus the
  ridge term) and ε_p = ∞ (no projection), by full-batch gradient descent
  (one step per epoch) with step size η.

  Returns:
    (poison inputs, Eq. 4 loss at the start, at the end).
  """
  def loss(x):
    residual = x @ theta_low - y_poison
    return 0.5 * jnp.sum(jnp.square(
        clean_grad + x.T @ residual / x.shape[0]))

  def body(_, x):
    return x - lr * jax.grad(loss)(x)

  x = jax.lax.fori_loop(0, epochs, body, x_init)
  return x, loss(x_init), loss(x)


# --------------------------------------------------------------------------
# Gradient descent on the clean data (§6, Fig. 5; App. C.2).
# --------------------------------------------------------------------------


@functools.partial(jax.jit,
                   static_argnames=('steps', 'batch_size', 'signal_dim'))
def clean_gradient_descent(key, theta0, target, direction, x, y, l2, n_ref, *,
                           lr: float, steps: int, batch_size: int,
                           signal_dim: int):
  """Mini-batch gradient descent on the clean (retain) data (x, y) from θ0.

  The objective is the one θ(S_retain) = `target` minimises, ½ Σ_retain
  (xᵀθ − y)² / n_ref + ½ l2 ‖θ‖²; g_t is its mini-batch estimate (batches
  without replacement, reshuffled every epoch; with replacement when the
  data are fewer than a batch). Per step t, before the update
  θ_{t+1} = θ_t − lr g_t, it records

    cos_minibatch  ⟨g_t, v⟩ / (‖g_t‖ ‖v‖), v = `direction` (Fig. 5),
    cos_full       the same with the full clean gradient at θ_t,
    dist_l2/l1     ‖θ_t − target‖, the distance left to θ(S_retain),
    dist_low       its ℓ2 norm in the coordinates ≥ signal_dim (the
                   low-variance subspace of App. C.2).

  Returns:
    (θ_steps, {name: (steps,) array}).
  """
  n = x.shape[0]
  gram, moment = normal_equations(x, y, jnp.ones(n))   # full gradients, cheap
  if n >= batch_size:
    per_epoch = n // batch_size
    epochs = -(-steps // per_epoch)
    batches = jax.vmap(lambda k: jax.random.permutation(k, n)[
        :per_epoch * batch_size].reshape(per_epoch, batch_size))(
            jax.random.split(key, epochs))
    batches = batches.reshape(-1, batch_size)[:steps]
  else:
    batches = jax.random.randint(key, (steps, batch_size), 0, n)
  vnorm = jnp.linalg.norm(direction)

  def cos(g):
    return jnp.dot(g, direction) / (jnp.linalg.norm(g) * vnorm + 1e-300)

  def step(theta, batch):
    xb, yb = x[batch], y[batch]
    g_mb = (n / n_ref) * xb.T @ (xb @ theta - yb) / batch_size + l2 * theta
    g_full = (gram @ theta - moment) / n_ref + l2 * theta
    e = theta - target
    stats = {'cos_minibatch': cos(g_mb), 'cos_full': cos(g_full),
             'dist_l2': jnp.linalg.norm(e), 'dist_l1': jnp.sum(jnp.abs(e)),
             'dist_low': jnp.linalg.norm(e[signal_dim:])}
    return theta - lr * g_mb, stats

  return jax.lax.scan(step, theta0, batches)
