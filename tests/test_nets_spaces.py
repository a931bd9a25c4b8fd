"""Networks chosen from gymnax spaces: encoders, action heads, actor-critic, Q- and GRU networks."""

import math

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces
from scipy import stats

from jaxmeta.nets import (
    ActorCriticNet,
    CategoricalDist,
    CategoricalHead,
    DictEncoder,
    DiscreteEncoder,
    QNetwork,
    RecurrentActorCritic,
    TanhGaussianDist,
    TanhGaussianHead,
    VectorEncoder,
    actor_critic_for,
    encoder_for,
    head_for,
    q_network_for,
    recurrent_actor_critic_for,
)
from jaxmeta.nets.encoders import ObsEncoder

KEY = jax.random.key(0)
IMAGE = spaces.Box(0, 255, (5, 5, 2), jnp.uint8)
VECTOR = spaces.Box(-1.0, 1.0, (4,))
DICT = spaces.Dict({"pos": spaces.Discrete(6), "img": IMAGE, "vel": spaces.Box(-1.0, 1.0, ())})
DISCRETE_A = spaces.Discrete(3)
BOX_A = spaces.Box(np.array([-2.0, 0.0]), np.array([2.0, 1.0]), (2,))
SMALL = dict(features=8, hidden_sizes=(8,), conv_channels=(4,))


def sample_obs(space, lead, key=KEY):
    """A batch ``[*lead, *shape]`` drawn from the space."""
    if isinstance(space, spaces.Dict):
        keys = jax.random.split(key, len(space.spaces))
        return {k: sample_obs(s, lead, kk) for (k, s), kk in zip(space.spaces.items(), keys, strict=True)}
    keys = jax.random.split(key, math.prod(lead)).reshape(*lead)
    sample = space.sample
    for _ in lead:
        sample = jax.vmap(sample)
    return sample(keys)


def primitives(jaxpr):
    """Names of all primitives in a jaxpr, sub-jaxprs (scan, cond, pjit) included."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    names |= primitives(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    names |= primitives(sub)
    return names


def vmapped_init_primitives(module, *args):
    init = lambda key: module.init(key, *args)  # noqa: E731
    return primitives(jax.make_jaxpr(jax.vmap(init))(jax.random.split(KEY, 3)).jaxpr)


QR_PRIMITIVES = {"qr", "householder_product", "geqrf", "geqp3"}


# --- encoders -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
@pytest.mark.parametrize(
    "space, kind",
    [
        (IMAGE, ObsEncoder),
        (VECTOR, VectorEncoder),
        (spaces.Box(-1.0, 1.0, ()), VectorEncoder),
        (spaces.Box(-1.0, 1.0, (2, 3)), VectorEncoder),
        (spaces.Discrete(5), DiscreteEncoder),
        (DICT, DictEncoder),
    ],
)
def test_encoder_for_maps_leading_dims_to_features(space, kind, lead):
    enc = encoder_for(space, 8, hidden=(8,), conv_channels=(4,))
    assert isinstance(enc, kind)
    obs = sample_obs(space, lead)
    params = enc.init(KEY, obs)
    out = enc.apply(params, obs)
    assert out.shape == (*lead, 8) and out.dtype == jnp.float32
    # Every batch element is encoded on its own.
    if lead:
        first = enc.apply(params, jax.tree.map(lambda x: x.reshape(-1, *x.shape[len(lead) :])[0], obs))
        np.testing.assert_allclose(out.reshape(-1, 8)[0], first, rtol=1e-5, atol=1e-6)


def test_encoder_for_rejects_other_spaces_by_name():
    with pytest.raises(ValueError, match="Tuple"):
        encoder_for(spaces.Tuple([VECTOR, VECTOR]))
    with pytest.raises(ValueError, match="0-3 dims"):
        encoder_for(spaces.Box(0.0, 1.0, (1, 2, 3, 4)))
    with pytest.raises(ValueError, match="one hidden layer"):
        encoder_for(IMAGE, hidden=(8, 8))


def test_dict_encoder_does_not_depend_on_key_order():
    a = DictEncoder(4, {"x": VectorEncoder(4), "y": DiscreteEncoder(4, 3)})
    b = DictEncoder(4, {"y": DiscreteEncoder(4, 3), "x": VectorEncoder(4)})
    obs = {"x": jnp.ones((2, 5)), "y": jnp.array([0, 2])}
    pa, pb = a.init(KEY, obs), b.init(KEY, obs)
    assert jax.tree.all(jax.tree.map(lambda u, v: bool(jnp.array_equal(u, v)), pa, pb))
    np.testing.assert_array_equal(a.apply(pa, obs), b.apply(pb, obs))
    hash(a)  # a flax module attribute must be hashable


def test_discrete_encoder_is_one_hot_then_dense():
    enc = DiscreteEncoder(3, 4)
    params = enc.init(KEY, jnp.array(0))
    kernel = params["params"]["VectorEncoder_0"]["MLP_0"]["Dense_0"]["kernel"]
    np.testing.assert_allclose(enc.apply(params, jnp.array([1, 3])), kernel[jnp.array([1, 3])], rtol=1e-6)


# --- action heads -------------------------------------------------------------------------------


def tanh_gaussian(mean, log_std, low=-2.0, high=3.0):
    mean = jnp.asarray(mean, jnp.float32)
    shape = mean.shape[-1:]
    n = math.prod(shape)
    return TanhGaussianDist(
        mean,
        jnp.broadcast_to(jnp.asarray(log_std, jnp.float32), mean.shape),
        shape,
        tuple(np.broadcast_to(low, n).astype(float)),
        tuple(np.broadcast_to(high, n).astype(float)),
    )


def test_tanh_gaussian_log_prob_matches_change_of_variables_reference():
    mean = np.array([[0.3, -1.0], [2.0, 0.5]])
    log_std = np.array([-0.5, 0.4])
    low, high = np.array([-2.0, 0.0]), np.array([3.0, 1.0])
    raw = np.array([[0.1, -2.5], [4.0, 7.0]])
    dist = tanh_gaussian(mean, log_std, low, high)
    # Reference in float64: Gaussian density of raw over |d env / d raw| by central
    # differences of the squashing map, not the closed form under test.
    squash = lambda u: (low + high) / 2 + (high - low) / 2 * np.tanh(u)  # noqa: E731
    eps = 1e-6
    jac = (squash(raw + eps) - squash(raw - eps)) / (2 * eps)
    ref = (stats.norm.logpdf(raw, mean, np.exp(log_std)) - np.log(jac)).sum(-1)
    np.testing.assert_allclose(dist.log_prob(jnp.asarray(raw, jnp.float32)), ref, rtol=1e-4, atol=1e-4)
    # And distrax's transformed distribution, scored on env actions, where atanh is still accurate.
    moderate = jnp.array([[0.1, -1.5], [1.0, 0.7]])
    np.testing.assert_allclose(
        dist.log_prob(moderate), dist.distribution.log_prob(dist.to_env(moderate)), rtol=1e-4, atol=1e-4
    )


def test_tanh_gaussian_density_matches_histogram_of_samples():
    dist = tanh_gaussian(jnp.full((50_000, 1), 0.4), 0.3, low=-1.0, high=2.0)
    raw, logp = dist.sample(KEY)
    env = np.asarray(dist.to_env(raw))[:, 0]
    np.testing.assert_allclose(logp, dist.log_prob(raw))
    edges = np.linspace(-0.9, 1.9, 15)
    hist, _ = np.histogram(env, bins=edges)
    empirical = hist / (len(env) * np.diff(edges))
    centres = (edges[:-1] + edges[1:]) / 2
    # Density of the env action at the bin centres: log_prob of the raw action that maps there.
    raw_at = np.arctanh((centres - 0.5) / 1.5)[:, None]
    one = tanh_gaussian(jnp.full((len(centres), 1), 0.4), 0.3, low=-1.0, high=2.0)
    density = np.exp(np.asarray(one.log_prob(jnp.asarray(raw_at, jnp.float32))))
    np.testing.assert_allclose(empirical, density, rtol=0.06, atol=0.01)


def test_tanh_gaussian_samples_lie_in_bounds_even_when_saturated():
    low, high = np.array([-2.0, 0.0]), np.array([3.0, 1.0])
    dist = tanh_gaussian(jnp.array([[40.0, -40.0], [0.0, 0.0]]).repeat(500, 0), 3.0, low, high)
    env = dist.to_env(dist.sample(KEY)[0])
    assert bool(jnp.all((env >= low) & (env <= high)))
    assert bool(jnp.all(jnp.isfinite(dist.sample(KEY)[1])))


def test_tanh_gaussian_mode_entropy_and_finite_gradients_at_large_raw():
    dist = tanh_gaussian(jnp.array([[0.5, -3.0]]), jnp.array([0.2, -1.0]), low=-2.0, high=3.0)
    np.testing.assert_allclose(dist.to_env(dist.mode()), 0.5 + 2.5 * np.tanh([[0.5, -3.0]]), rtol=1e-6)
    np.testing.assert_allclose(
        dist.entropy(), [(stats.norm.entropy(0, np.exp([0.2, -1.0]))).sum()], rtol=1e-6
    )

    def logp(mean, log_std, raw):
        return tanh_gaussian(mean, log_std).log_prob(raw).sum()

    raw = jnp.array([[60.0, -60.0], [200.0, -200.0]])
    values = tanh_gaussian(jnp.zeros((2, 2)), 0.0).log_prob(raw)
    grads = jax.grad(logp, argnums=(0, 1, 2))(jnp.zeros((2, 2)), jnp.zeros((2, 2)), raw)
    assert bool(jnp.all(jnp.isfinite(values)))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_categorical_log_prob_entropy_mode_against_numpy():
    logits = np.array([[1.0, -0.5, 2.0], [0.0, 0.0, 0.0]], np.float32)
    dist = CategoricalDist(jnp.asarray(logits))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    action = jnp.array([2, 1])
    np.testing.assert_allclose(dist.log_prob(action), np.log(p[[0, 1], [2, 1]]), rtol=1e-5)
    np.testing.assert_allclose(dist.entropy(), -(p * np.log(p)).sum(-1), rtol=1e-5)
    np.testing.assert_array_equal(dist.mode(), [2, 0])
    assert dist.to_env(action) is action
    assert isinstance(dist.distribution, distrax.Categorical)
    sampled, logp = dist.sample(KEY)
    assert sampled.shape == (2,) and sampled.dtype == jnp.int32
    np.testing.assert_allclose(logp, dist.log_prob(sampled))


def test_head_for_chooses_by_space_and_stays_hashable():
    cat = head_for(DISCRETE_A)
    assert isinstance(cat, CategoricalHead) and cat.num_actions == 3
    box = head_for(BOX_A)
    assert isinstance(box, TanhGaussianHead)
    assert (box.action_shape, box.low, box.high) == ((2,), (-2.0, 0.0), (2.0, 1.0))
    hash(box)
    scalar = head_for(spaces.Box(-1.0, 1.0, ()))  # scalar actions: shape () end to end
    params = scalar.init(KEY, jnp.zeros((4, 3)))
    dist = scalar.apply(params, jnp.zeros((4, 3)))
    raw, logp = dist.sample(KEY)
    assert raw.shape == logp.shape == dist.to_env(raw).shape == (4,)
    with pytest.raises(ValueError, match="Tuple"):
        head_for(spaces.Tuple([DISCRETE_A]))
    with pytest.raises(ValueError, match="finite bounds"):
        head_for(spaces.Box(-jnp.inf, jnp.inf, (2,)))


def test_heads_start_near_uniform_and_centred():
    x = jax.random.normal(KEY, (16, 64))
    cat = CategoricalHead(4)
    assert float(jnp.abs(cat.apply(cat.init(KEY, x), x).logits).max()) < 0.05
    gauss = TanhGaussianHead(2, -1.0, 1.0)
    dist = gauss.apply(gauss.init(KEY, x), x)
    assert float(jnp.abs(dist.mean).max()) < 0.05
    np.testing.assert_array_equal(dist.log_std, 0.0)


# --- networks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("action_space", [DISCRETE_A, BOX_A])
@pytest.mark.parametrize("obs_space", [IMAGE, VECTOR, DICT])
def test_actor_critic_shapes_and_finite_log_prob_gradient(obs_space, action_space):
    net = actor_critic_for(obs_space, action_space, **SMALL)
    obs = sample_obs(obs_space, (2, 3))
    params = jax.jit(net.init)(KEY, obs)

    def loss(p):  # a PPO-like loss; one compiled program for the forward and backward pass
        dist, value = net.apply(p, obs)
        action, logp = dist.sample(KEY)
        action = jax.lax.stop_gradient(action)  # a stored action is data
        out = (action, logp, dist.log_prob(action), dist.entropy(), dist.to_env(action), value)
        return -(dist.log_prob(action) + 0.01 * dist.entropy()).mean() + (value**2).mean(), out

    grads, (action, logp, logp_again, entropy, env_action, value) = jax.jit(jax.grad(loss, has_aux=True))(
        params
    )
    assert value.shape == logp.shape == entropy.shape == (2, 3)
    np.testing.assert_allclose(logp, logp_again, rtol=1e-6)
    assert action.shape == env_action.shape == (2, 3, *action_space.shape)
    assert bool(jnp.all(action_space.contains(env_action)))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_actor_critic_torso_and_encoder_sharing():
    net = actor_critic_for(VECTOR, DISCRETE_A)
    params = jax.eval_shape(net.init, KEY, jnp.zeros(4))["params"]
    # PureJaxRL's classic-control layout: separate 64-64 tanh actor and critic.
    assert set(params) == {"encoder", "critic_encoder", "actor_torso", "critic_torso", "head", "value"}
    assert params["encoder"]["MLP_0"]["Dense_0"]["kernel"].shape == (4, 64)
    assert params["actor_torso"]["Dense_0"]["kernel"].shape == (64, 64)
    shared = actor_critic_for(VECTOR, DISCRETE_A, shared_torso=True, activation="relu")
    assert set(jax.eval_shape(shared.init, KEY, jnp.zeros(4))["params"]) == {
        "encoder",
        "torso",
        "head",
        "value",
    }
    image = actor_critic_for(IMAGE, DISCRETE_A, **SMALL)  # the CNN is shared by default
    assert "critic_encoder" not in jax.eval_shape(image.init, KEY, sample_obs(IMAGE, ()))["params"]
    with pytest.raises(ValueError, match="activation"):
        actor_critic_for(VECTOR, DISCRETE_A, activation="gelu").init(KEY, jnp.zeros(4))
    both = ActorCriticNet(VectorEncoder(8), CategoricalHead(3), VectorEncoder(8), shared_torso=True)
    with pytest.raises(ValueError, match="shared encoder"):
        both.init(KEY, jnp.zeros(4))


@pytest.mark.parametrize("obs_space", [IMAGE, VECTOR, DICT])
def test_q_network_shapes(obs_space):
    net = q_network_for(obs_space, spaces.Discrete(5), **SMALL)
    assert isinstance(net, QNetwork)
    obs = sample_obs(obs_space, (2, 3))
    assert net.apply(net.init(KEY, obs), obs).shape == (2, 3, 5)


def test_q_network_for_needs_discrete_actions():
    with pytest.raises(ValueError, match="Discrete"):
        q_network_for(VECTOR, BOX_A)


def small_recurrent(obs_space=DICT, action_space=BOX_A):
    return recurrent_actor_critic_for(obs_space, action_space, gru_size=8, **SMALL)


def test_recurrent_step_by_step_equals_sequence_with_resets():
    net = small_recurrent(VECTOR, BOX_A)
    T, B = 6, 3
    obs = sample_obs(VECTOR, (T, B))
    reset = jnp.zeros((T, B), bool).at[2, 1].set(True).at[4, 0].set(True).at[4, 2].set(True)
    h0 = jax.random.normal(KEY, (B, 8))  # a non-zero carry, so the resets matter
    params = jax.jit(net.init)(KEY, h0, obs, reset)
    sequence = jax.jit(net.apply)
    h_seq, dist_seq, v_seq = sequence(params, h0, obs, reset)
    assert h_seq.shape == (B, 8) and v_seq.shape == (T, B) and dist_seq.mean.shape == (T, B, 2)

    step = jax.jit(lambda h, o, r: net.apply(params, h, o, r, method=RecurrentActorCritic.step))
    h, means, values = h0, [], []
    for t in range(T):
        h, dist, value = step(h, jax.tree.map(lambda x, t=t: x[t], obs), reset[t])
        means.append(dist.mean)
        values.append(value)
    np.testing.assert_allclose(h, h_seq, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jnp.stack(means), dist_seq.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jnp.stack(values), v_seq, rtol=1e-5, atol=1e-6)

    # A reset forgets the past: from its reset at t=2 on, env 1 does not depend on the initial
    # state, while before then it does.
    _, _, v_other = sequence(params, net.initial_hidden((B,)), obs, reset)
    np.testing.assert_allclose(v_other[2:, 1], v_seq[2:, 1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(v_other[1, 1], v_seq[1, 1])


def test_recurrent_discrete_shapes_and_initial_hidden():
    net = small_recurrent(VECTOR, DISCRETE_A)
    assert net.initial_hidden((2, 3)).shape == (2, 3, 8)
    obs = sample_obs(VECTOR, (4, 2))
    params = net.init(KEY, net.initial_hidden((2,)), obs, jnp.zeros((4, 2), bool))
    h, dist, value = net.apply(params, net.initial_hidden((2,)), obs, jnp.zeros((4, 2), bool))
    assert h.shape == (2, 8) and dist.logits.shape == (4, 2, 3) and value.shape == (4, 2)


# --- initialisation under jit(vmap(init)) -------------------------------------------------------


def test_primitive_scan_detects_orthogonal_initialisers():
    # The check below would be vacuous if it missed the QR of flax's defaults.
    ortho = nn.Dense(4, kernel_init=nn.initializers.orthogonal())
    assert vmapped_init_primitives(ortho, jnp.zeros(3)) & QR_PRIMITIVES
    gru = nn.GRUCell(4)  # recurrent_kernel_init defaults to orthogonal
    assert vmapped_init_primitives(gru, jnp.zeros(4), jnp.zeros(3)) & QR_PRIMITIVES


@pytest.mark.parametrize(
    "name, build, args",
    [
        ("vector", lambda: VectorEncoder(8, (8,)), (jnp.zeros(4),)),
        ("discrete", lambda: DiscreteEncoder(8, 5), (jnp.zeros((), jnp.int32),)),
        ("dict", lambda: encoder_for(DICT, 8, conv_channels=(4,)), (sample_obs(DICT, ()),)),
        ("categorical", lambda: CategoricalHead(3), (jnp.zeros(8),)),
        ("tanh_gaussian", lambda: head_for(BOX_A), (jnp.zeros(8),)),
        ("actor_critic", lambda: actor_critic_for(DICT, BOX_A, **SMALL), (sample_obs(DICT, ()),)),
        ("q_network", lambda: q_network_for(VECTOR, DISCRETE_A, **SMALL), (jnp.zeros(4),)),
        (
            "recurrent",
            lambda: small_recurrent(VECTOR, DISCRETE_A),
            (jnp.zeros((2, 8)), jnp.zeros((3, 2, 4)), jnp.zeros((3, 2), bool)),
        ),
    ],
)
def test_vmapped_init_has_no_qr(name, build, args):
    assert not vmapped_init_primitives(build(), *args) & QR_PRIMITIVES, name


def test_jit_vmap_init_over_seeds_runs():
    # The GRU was the module at risk (flax's default recurrent kernel is orthogonal); the
    # jaxpr check above covers the rest without compiling each.
    keys = jax.random.split(KEY, 3)
    net = small_recurrent(VECTOR, BOX_A)
    args = (jnp.zeros((2, 8)), jnp.zeros((3, 2, 4)), jnp.zeros((3, 2), bool))
    params = jax.jit(jax.vmap(lambda k: net.init(k, *args)))(keys)
    # One network per seed, and the seeds differ.
    kernels = params["params"]["core"]["cell"]["hr"]["kernel"]
    assert kernels.shape == (3, 8, 8) and not bool(jnp.allclose(kernels[0], kernels[1]))
