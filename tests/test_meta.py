"""jaxmeta.meta against closed forms, finite differences and plain-numpy loops."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmeta import meta
from jaxmeta.meta import sinusoid


def quadratic(params, batch):
    a, b = batch
    return 0.5 * jnp.sum((a @ params["w"] - b) ** 2)


def test_adapt_takes_the_hand_derived_gradient_steps_on_a_quadratic():
    rng = np.random.default_rng(0)
    a, b, w = rng.normal(size=(5, 3)), rng.normal(size=5), rng.normal(size=3)
    expected = w.copy()
    for _ in range(3):
        expected = expected - 0.05 * a.T @ (a @ expected - b)  # grad of 0.5 |A w - b|^2
    got = meta.adapt(quadratic, {"w": jnp.asarray(w)}, (jnp.asarray(a), jnp.asarray(b)), 3, 0.05)
    np.testing.assert_allclose(got["w"], expected, rtol=1e-5, atol=1e-6)
    assert meta.adapt(quadratic, {"w": w}, (a, b), 0, 0.05)["w"] is w


def test_adapt_with_per_parameter_step_sizes_scales_each_leaf():
    rng = np.random.default_rng(1)
    a, b, w = rng.normal(size=(4, 2)), rng.normal(size=4), rng.normal(size=2)
    sizes = np.array([0.01, 0.1])
    expected = w - sizes * (a.T @ (a @ w - b))
    got = meta.adapt(quadratic, {"w": jnp.asarray(w)}, (a, b), 1, {"w": jnp.asarray(sizes)})
    np.testing.assert_allclose(got["w"], expected, rtol=1e-5)
    assert jax.tree.all(
        jax.tree.map(lambda s: bool(jnp.all(s == 0.3)), meta.learned_step_sizes({"w": w}, 0.3))
    )


@pytest.mark.parametrize("bad", [(-1, 0.1), (1.5, 0.1), (1, 0.0), (1, -0.01)])
def test_inner_loop_refuses_bad_settings(bad):
    with pytest.raises(ValueError, match=r"num_steps|step_size"):
        meta.adapt(quadratic, {"w": jnp.zeros(2)}, (jnp.ones((2, 2)), jnp.ones(2)), *bad)


def tiny_net(params, x):
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def tiny_loss(params, batch):
    x, y = batch
    return jnp.mean((tiny_net(params, x) - y) ** 2)


def tiny_problem(seed=0, tasks=3):
    rng = np.random.default_rng(seed)
    params = {"w1": rng.normal(size=(2, 4)), "b1": rng.normal(size=4) * 0.1, "w2": rng.normal(size=(4, 1))}
    support = (rng.normal(size=(tasks, 5, 2)), rng.normal(size=(tasks, 5, 1)))
    query = (rng.normal(size=(tasks, 6, 2)), rng.normal(size=(tasks, 6, 1)))
    return jax.tree.map(jnp.asarray, (params, support, query))


def central_differences(f, params, eps=1e-6):
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    grads = np.zeros(flat.shape)
    for i in range(flat.size):
        step = np.zeros(flat.shape)
        step[i] = eps
        grads[i] = (f(unravel(flat + step)) - f(unravel(flat - step))) / (2 * eps)
    return unravel(jnp.asarray(grads))


def test_second_order_meta_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        params, support, query = tiny_problem()

        def objective(p):
            return meta.maml_loss(p, support, query, inner_loss=tiny_loss, num_steps=2, step_size=0.1)

        got = jax.grad(objective)(params)
        expected = central_differences(lambda p: float(objective(p)), params)
        for leaf_got, leaf_expected in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(leaf_got, leaf_expected, rtol=1e-6, atol=1e-8)


def test_meta_sgd_step_size_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        params, support, query = tiny_problem(seed=2)
        sizes = meta.learned_step_sizes(params, 0.05)

        def objective(s):
            return meta.maml_loss(params, support, query, inner_loss=tiny_loss, num_steps=1, step_size=s)

        got = jax.grad(objective)(sizes)
        expected = central_differences(lambda s: float(objective(s)), sizes)
        for leaf_got, leaf_expected in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(leaf_got, leaf_expected, rtol=1e-6, atol=1e-8)


def test_first_order_meta_gradient_is_the_query_gradient_at_the_adapted_parameters():
    params, support, query = tiny_problem(seed=3)
    got = jax.grad(
        lambda p: meta.maml_loss(
            p, support, query, inner_loss=tiny_loss, num_steps=3, step_size=0.1, first_order=True
        )
    )(params)
    per_task = []
    for t in range(3):  # the formula, task by task: grad_theta' L_query(theta') at theta' = U(theta)
        s, q = jax.tree.map(lambda x, t=t: x[t], (support, query))
        adapted = meta.adapt(tiny_loss, params, s, 3, 0.1)
        per_task.append(jax.grad(tiny_loss)(adapted, q))
    expected = jax.tree.map(lambda *g: sum(g) / 3, *per_task)
    for leaf_got, leaf_expected in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(leaf_got, leaf_expected, rtol=1e-5, atol=1e-7)


def test_two_head_network_inner_head_learns_only_through_second_order_terms():
    """MIL's two heads: the inner loss reads head a, the outer loss head b, on a shared trunk."""
    params, support, query = tiny_problem(seed=4)
    params = {**params, "head_a": params["w2"], "head_b": params["w2"] * 0.5}
    del params["w2"]

    def head_loss(head):
        def loss(p, batch):
            x, y = batch
            return jnp.mean((jnp.tanh(x @ p["w1"] + p["b1"]) @ p[head] - y) ** 2)

        return loss

    def grads(first_order):
        return jax.grad(
            lambda p: meta.maml_loss(
                p,
                support,
                query,
                inner_loss=head_loss("head_a"),
                outer_loss=head_loss("head_b"),
                num_steps=1,
                step_size=0.1,
                first_order=first_order,
            )
        )(params)

    second, first = grads(False), grads(True)
    assert float(jnp.abs(first["head_a"]).max()) == 0.0  # the outer loss never reads head a
    assert float(jnp.abs(second["head_a"]).max()) > 1e-4  # ... but head a shapes the adapted trunk
    # Head b is untouched by the inner loop: its meta-gradient is the outer gradient at the adapted trunk.
    np.testing.assert_allclose(second["head_b"], first["head_b"], rtol=1e-5)


def numpy_adam_steps(theta, targets, lr, b1=0.9, b2=0.999, eps=1e-8):
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t, c in enumerate(targets, start=1):
        g = theta - c  # grad of 0.5 |theta - c|^2
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta = theta - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return theta


def test_reptile_step_matches_a_python_loop_with_adam_inner_steps():
    rng = np.random.default_rng(5)
    phi = rng.normal(size=3)
    targets = rng.normal(size=(4, 5, 3))  # 4 tasks x 5 inner minibatches

    def loss(params, c):
        return 0.5 * jnp.sum((params["x"] - c) ** 2)

    got = meta.reptile_step(loss, {"x": jnp.asarray(phi)}, jnp.asarray(targets), optax.adam(0.1), 0.5)
    adapted = [numpy_adam_steps(phi, targets[i], 0.1) for i in range(4)]
    expected = phi + 0.5 * np.mean([a - phi for a in adapted], axis=0)
    np.testing.assert_allclose(got["x"], expected, rtol=1e-5, atol=1e-6)
    sgd = meta.reptile_adapt(loss, {"x": jnp.asarray(phi)}, jnp.asarray(targets[0]), optax.sgd(0.2))
    theta = phi.copy()
    for c in targets[0]:
        theta = theta - 0.2 * (theta - c)
    np.testing.assert_allclose(sgd["x"], theta, rtol=1e-5, atol=1e-6)


def test_adaptation_losses_trace_the_query_loss_after_each_step():
    params, support, query = tiny_problem(seed=6, tasks=1)
    s, q = jax.tree.map(lambda x: x[0], (support, query))
    curve = meta.adaptation_losses(tiny_loss, params, s, tiny_loss, q, 4, 0.1)
    expected = [tiny_loss(meta.adapt(tiny_loss, params, s, j, 0.1), q) for j in range(5)]
    np.testing.assert_allclose(curve, np.array(expected), rtol=1e-5)


def test_sinusoid_tasks_cover_the_papers_ranges_and_values():
    tasks = sinusoid.sample_tasks(jax.random.PRNGKey(0), 5000)
    assert float(tasks.amplitude.min()) >= 0.1 and float(tasks.amplitude.max()) <= 5.0
    assert float(tasks.phase.min()) >= 0.0 and float(tasks.phase.max()) <= np.pi
    x, y = sinusoid.sample_points(jax.random.PRNGKey(1), tasks, 7)
    assert x.shape == y.shape == (5000, 7, 1)
    assert float(x.min()) >= -5.0 and float(x.max()) <= 5.0
    amp, phase = np.asarray(tasks.amplitude)[:, None, None], np.asarray(tasks.phase)[:, None, None]
    np.testing.assert_allclose(y, amp * np.sin(np.asarray(x) - phase), rtol=1e-5, atol=1e-5)
    # The mean square of A sin(.) over the task distribution: E[A^2] / 2 = (0.1^2 + 0.1*5 + 5^2) / 6.
    np.testing.assert_allclose(float(jnp.mean(y**2)), (0.01 + 0.5 + 25) / 6, rtol=0.03)
