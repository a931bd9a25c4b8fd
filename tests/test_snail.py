"""SNAIL: the dense block against numpy, causality, padding, one step at a time = the whole
sequence, acting = training, the context spanning episodes, trials longer than the context,
training, config checks."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_config

from jaxmeta import config, runner, trial
from jaxmeta.algos import snail
from jaxmeta.nets.snail import SNAIL, DenseBlock, dilations

ROOT = Path(__file__).resolve().parents[1]
W, C = 5, 3
CONTEXT, T = 12, 12  # training trials fill the context exactly
BLOCKS = "[tc,attention,tc,attention]"  # every kind of block after every other, few ops to compile


def small_config(run_dir="/tmp/unused", *extra):
    return tiny_config(
        "snail",
        run_dir,
        24,
        f"env.size={W}",
        f"env.num_colors={C}",
        "env.max_steps_in_episode=5",
        f"algo.trial.num_steps={T}",
        f"algo.context={CONTEXT}",
        f"algo.blocks={BLOCKS}",
        "algo.features=8",
        "algo.filters=8",
        "algo.key_size=8",
        "algo.value_size=8",
        "algo.hidden=16",
        "algo.conv_channels=[8]",
        *extra,
    )


# ----------------------------------------------------------------------------- the blocks
def test_dilations_cover_the_sequence():
    assert dilations(1) == (1,)
    assert dilations(2) == (1,)
    assert dilations(12) == (1, 2, 4, 8)
    assert dilations(64) == (1, 2, 4, 8, 16, 32)
    assert dilations(80) == (1, 2, 4, 8, 16, 32, 64)


@pytest.mark.parametrize("dilation", [1, 3, 9])
def test_dense_block_matches_a_numpy_causal_dilated_convolution(dilation):
    length, channels, filters = 7, 5, 3
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, length, channels)))
    valid = np.ones((2, length), bool)
    valid[1, :2] = False  # left padding, as in an acting window
    x = x * valid[..., None]
    block = DenseBlock(dilation, filters)
    params = block.init(jax.random.PRNGKey(1), x, valid)["params"]
    params = jax.tree.map(lambda p: p + 0.1, params)  # a nonzero bias too
    kernel, bias = np.asarray(params["kernel"]), np.asarray(params["bias"])

    expected = np.zeros((2, length, channels + filters))
    for b in range(2):
        for t in range(length):
            past = x[b, t - dilation] if t - dilation >= 0 else np.zeros(channels)
            z = past @ kernel[0] + x[b, t] @ kernel[1] + bias
            y = np.tanh(z[:filters]) / (1.0 + np.exp(-z[filters:]))
            expected[b, t] = np.concatenate([x[b, t], y * valid[b, t]])
    out = block.apply({"params": params}, jnp.asarray(x), jnp.asarray(valid))
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)


# ----------------------------------------------------------------------------- the policy
def inputs_of(data):
    """The StepInputs the agent saw at each step of one recorded trial (leading axis T)."""
    start = jnp.concatenate([jnp.ones((1,), bool), data.done[:-1]])
    return trial.StepInputs(
        obs=data.obs,
        prev_action=jnp.concatenate([jnp.zeros((1,), jnp.int32), data.action[:-1]]),
        prev_reward=jnp.concatenate([jnp.zeros((1,)), data.reward[:-1]]),
        episode_start=start,
        episode_index=data.episode_index,
        task_id=data.task_id,
    )


def random_state(parts):
    """A train state with random parameters (nonzero biases too), built without compiling ``init``:
    what these tests check holds for any parameters."""
    shapes = jax.eval_shape(parts.algo.init, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)

    def fill(leaf):
        if leaf.ndim == 1:
            return jnp.asarray(0.1 * rng.standard_normal(leaf.shape), leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(fan_in), leaf.dtype)

    zeros = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), shapes)
    return zeros.replace(params=jax.tree.map(fill, shapes.params))


@pytest.fixture(scope="module")
def agent():
    """Parts, params, a greedy diff-mode trial longer than the context, and jitted helpers."""
    parts = snail.make_parts(small_config())
    state = random_state(parts)
    setup = parts.setup
    steps = CONTEXT + 6
    network = parts.network

    def greedy(params, inputs, window, memory, key):
        return snail.act(network, params, inputs, window, key, greedy=True)

    data, _, _ = jax.jit(
        lambda key: trial.run_trials(
            setup.env,
            setup.params,
            greedy,
            state.params,
            snail.empty_window(parts.network),
            setup.train_tasks,
            jnp.arange(3),
            key,
            steps,
            "diff",
        )
    )(jax.random.PRNGKey(7))

    @jax.jit
    def acting_logits(inputs):
        """Step by step through the policy's window, as while acting: [T, A]."""

        def _step(window, step_inputs):
            logits, window = snail.step_logits(network, state.params, step_inputs, window)
            return window, logits

        return jax.lax.scan(_step, snail.empty_window(network), inputs)[1]

    training_logits = jax.jit(lambda d: snail.trial_logits(network, state.params, d))
    return parts, state, data, acting_logits, training_logits


def one(data, i, stop=None):
    return jax.tree.map(lambda x: x[i, :stop], data)


STACK = SNAIL(CONTEXT, tuple(BLOCKS.strip("[]").split(",")), filters=8, key_size=8, value_size=8)
apply_stack = jax.jit(STACK.apply)


def stack_params(agent):
    """The agent's SNAIL stack parameters (for ``apply_stack``: tokens -> features)."""
    return {"params": agent[1].params["params"]["stack"]}


def test_stack_is_causal(agent):
    params = stack_params(agent)
    x = jax.random.normal(jax.random.PRNGKey(2), (10, 9))
    valid = jnp.ones(10, bool)
    out = np.asarray(apply_stack(params, x, valid))
    assert out.shape == (10, 9 + 2 * 4 * 8 + 2 * 8)
    for t in range(10):
        changed = np.asarray(apply_stack(params, x.at[t].add(1.0), valid))
        np.testing.assert_array_equal(changed[:t], out[:t])  # the past never sees the future
        assert np.abs(changed[t:] - out[t:]).max(-1).min() > 0  # ... and every later step sees it


def test_padding_is_zero_padding(agent):
    """A right-aligned window with garbage in its padding = the unpadded sequence."""
    params = stack_params(agent)
    x = jax.random.normal(jax.random.PRNGKey(3), (6, 9))
    garbage = 5.0 * jax.random.normal(jax.random.PRNGKey(4), (4, 9))
    window = jnp.concatenate([garbage, x])
    valid = jnp.arange(10) >= 4
    out_window = np.asarray(apply_stack(params, window, valid))
    # the sequence alone (what follows it does not matter: the stack is causal)
    alone = np.asarray(apply_stack(params, jnp.concatenate([x, garbage]), jnp.ones(10, bool)))[:6]
    np.testing.assert_allclose(out_window[4:], alone, atol=1e-5)
    assert np.all(out_window[:4] == 0.0)


BLOCK_LIST = BLOCKS.strip("[]").split(",")
WIDTH = 9 + 2 * 4 * 8 + 2 * 8  # the stack's output for 9 input channels
WINDOW_WIDTH = WIDTH + 2 * (8 + 8)  # ... then a key and a value (8 each) per attention block


@jax.jit
def step_through(params, x, valid):
    """``SNAIL.step`` position by position along axis -2 over a window of ``CONTEXT`` positions
    (as the policy's), from an empty one."""
    window = (
        jnp.zeros((*x.shape[:-2], CONTEXT, WINDOW_WIDTH)),
        jnp.zeros((*x.shape[:-2], CONTEXT), bool),
        jnp.int32(CONTEXT - 1),
    )

    def _step(window, inputs):
        x_t, valid_t = inputs
        out, *window = STACK.apply(params, x_t, *window, valid_t, method=SNAIL.step)
        return tuple(window), out

    _, out = jax.lax.scan(_step, window, (jnp.moveaxis(x, -2, 0), jnp.moveaxis(valid, -1, 0)))
    return jnp.moveaxis(out, 0, -2)


def test_stepping_equals_the_whole_sequence(agent):
    """One position at a time over the window = the stack over the whole sequence, at every
    position, with left padding and holes (garbage inputs there)."""
    params = stack_params(agent)
    x = jax.random.normal(jax.random.PRNGKey(5), (3, CONTEXT, 9))
    valid = np.ones((3, CONTEXT), bool)
    valid[1, :5] = False  # left padding, as in the first steps of a trial
    valid[2] = np.random.default_rng(1).random(CONTEXT) < 0.6
    valid[2, -1] = True
    valid = jnp.asarray(valid)
    whole = np.asarray(apply_stack(params, x, valid))
    stepped = np.asarray(step_through(params, x, valid))
    assert stepped.shape == whole.shape == (3, CONTEXT, WIDTH)
    assert (STACK.output_width(9), STACK.window_width(9)) == (WIDTH, WINDOW_WIDTH)
    np.testing.assert_allclose(stepped, whole, atol=1e-5)
    assert np.all(stepped[~np.asarray(valid)] == 0.0)


def test_a_window_of_the_wrong_width_is_refused(agent):
    params = stack_params(agent)
    window = (jnp.zeros((CONTEXT, WIDTH)), jnp.zeros((CONTEXT,), bool), jnp.int32(CONTEXT - 1))
    with pytest.raises(ValueError, match=f"needs window_width\\(9\\) = {WINDOW_WIDTH}"):
        STACK.apply(params, jnp.zeros(9), *window, method=SNAIL.step)


def numpy_banded_stack(params, x, band):
    """The stack over a whole sequence in numpy, attention reading the last ``band`` positions."""
    params = jax.tree.map(lambda p: np.asarray(p, np.float64), params["params"])
    x = np.asarray(x, np.float64)
    length, seen = len(x), {"tc": 0, "attention": 0}
    for kind in BLOCK_LIST:
        if kind == "tc":
            block = params[f"TCBlock_{seen[kind]}"]
            for j, dilation in enumerate(dilations(CONTEXT)):
                kernel, bias = block[f"DenseBlock_{j}"]["kernel"], block[f"DenseBlock_{j}"]["bias"]
                past = np.concatenate([np.zeros((dilation, x.shape[1])), x])[:length]
                z = past @ kernel[0] + x @ kernel[1] + bias
                filters = z.shape[1] // 2
                x = np.concatenate([x, np.tanh(z[:, :filters]) / (1.0 + np.exp(-z[:, filters:]))], axis=1)
        else:
            dense = params[f"AttentionBlock_{seen[kind]}"]["query_key_value"]
            query, keys, values = np.split(x @ dense["kernel"] + dense["bias"], [8, 16], axis=1)
            read = np.zeros((length, values.shape[1]))
            for t in range(length):
                seen_keys = slice(max(0, t - band + 1), t + 1)
                scores = keys[seen_keys] @ query[t] / math.sqrt(8)
                weights = np.exp(scores - scores.max())
                read[t] = weights @ values[seen_keys] / weights.sum()
            x = np.concatenate([x, read], axis=1)
        seen[kind] += 1
    return x


def test_stepping_past_the_window_keeps_each_position_as_computed(agent):
    """Over a sequence longer than the window, stepping = the whole-sequence stack with attention
    limited to the last ``CONTEXT`` positions (dense blocks never read further back)."""
    params = stack_params(agent)
    x = jax.random.normal(jax.random.PRNGKey(6), (3 * CONTEXT + 5, 9))
    stepped = np.asarray(step_through(params, x, jnp.ones(len(x), bool)))
    np.testing.assert_allclose(stepped, numpy_banded_stack(params, x, CONTEXT), atol=1e-4)
    # ... which differs from attending to every position so far
    assert np.abs(stepped - numpy_banded_stack(params, x, len(x))).max() > 1e-3


def test_acting_and_training_compute_the_same_policy(agent):
    """The logits trained on (a whole trial at once) are those the agent acted with (step by step)."""
    _, _, data, acting_logits, training_logits = agent
    assert int(data.episode_index[:, CONTEXT - 1].max()) >= 2  # several episodes in the first T steps
    for i in range(3):
        first_t = one(data, i, CONTEXT)  # a trial of T = context steps
        recomputed = np.asarray(training_logits(first_t))
        np.testing.assert_array_equal(recomputed.argmax(-1), np.asarray(first_t.action))
        acted = np.asarray(acting_logits(inputs_of(one(data, i))))
        np.testing.assert_allclose(acted[:CONTEXT], recomputed, atol=1e-5)


def test_context_spans_episodes(agent):
    """The first step of episode 2 depends on what was seen in episode 1: no reset at the boundary."""
    _, _, data, acting_logits, training_logits = agent
    i = int(np.argmax(np.asarray(data.episode_index[:, CONTEXT - 1])))
    d = one(data, i)
    episode = np.asarray(d.episode_index)
    second_start = int(np.argmax(episode == 1))
    in_first = jnp.asarray(episode == 0)[:, None, None, None]
    perturbed = d.replace(obs=jnp.where(in_first, 1.0 - d.obs, d.obs))  # every frame of episode 1 changed
    # ... but the inputs of episode 2 are the same: the agent's own token is unchanged
    np.testing.assert_array_equal(np.asarray(perturbed.obs[second_start:]), np.asarray(d.obs[second_start:]))
    before = np.asarray(acting_logits(inputs_of(d)))[second_start]
    after = np.asarray(acting_logits(inputs_of(perturbed)))[second_start]
    assert np.abs(before - after).max() > 1e-4
    short = jax.tree.map(lambda x: x[:CONTEXT], (d, perturbed))
    before_t, after_t = (np.asarray(training_logits(x))[second_start] for x in short)
    assert np.abs(before_t - after_t).max() > 1e-4


def test_a_trial_longer_than_the_context_runs_on(agent):
    """Past ``context`` steps acting goes on (finite logits), and a step older than the window
    still matters through the features the later steps in the window kept."""
    parts, _, data, acting_logits, _ = agent
    d = one(data, 0)
    before = np.asarray(acting_logits(inputs_of(d)))
    assert before.shape == (CONTEXT + 6, parts.network.num_actions)
    assert np.all(np.isfinite(before))
    perturbed = d.replace(obs=d.obs.at[0].set(1.0 - d.obs[0]))
    after = np.asarray(acting_logits(inputs_of(perturbed)))
    assert np.abs(before - after).max(-1).min() > 0


# ----------------------------------------------------------------------------- training
def test_tiny_training_run_loss_falls(tmp_path):
    cfg = small_config(tmp_path / "run", "algo.learning_rate=0.003", "algo.blocks=[tc,attention]")
    runner.run(cfg, log=lambda *_: None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert len(losses) == 24
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.05
    # The paper's test protocol: return and success of each of the eval.episodes episodes.
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["update"] for r in evals] == [0, 24]
    assert {"eval/episode_return", "eval/episode_success", "eval/total_return"} <= set(evals[-1])
    assert len(evals[-1]["eval/episode_return"]) == len(evals[-1]["eval/episode_success"]) == 2
    np.testing.assert_allclose(
        evals[-1]["eval/total_return"], sum(evals[-1]["eval/episode_return"]), atol=1e-5
    )


# ----------------------------------------------------------------------------- config
def test_shipped_configs_validate():
    for blocks in (2, 3):
        cfg = config.load(str(ROOT / "configs" / f"snail_x{blocks}.yaml"))
        assert cfg.algo.name == "snail" and cfg.env.num_blocks == blocks
        assert cfg.algo.context >= cfg.algo.trial.num_steps


@pytest.mark.parametrize(
    "override, message",
    [
        ("algo.context=0", "algo.context"),
        (f"algo.context={T - 1}", "algo.context"),
        ("algo.eval.num_tasks=9", "algo.eval.num_tasks"),
        ("algo.blocks=[tc,lstm]", "algo.blocks"),
        ("algo.blocks=[]", "algo.blocks"),
        ("algo.filters=0", "algo.filters"),
    ],
)
def test_bad_settings_are_config_errors(override, message):
    with pytest.raises(config.ConfigError, match=message):
        small_config("/tmp/unused", override)
