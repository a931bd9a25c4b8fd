"""SNAIL (Mishra et al., 2017), the meta-learning baseline of Chen & Agrawal (2020).

The policy reads every step of the current trial so far, across its episodes,
with a stack of temporal convolutions and causal attention
(:class:`jaxmeta.nets.snail.SnailPolicy`): TC, TC, attention, TC, attention,
then an MLP head. There is no memory across trials: what it knows about a task
is what happened earlier in the same trial.

Each step is one token ``[Phi(o_t, a_{t-1}, r_{t-1}), episode_start_t]``;
the first step of the trial has "no action" (index ``num_actions``) and
reward 0. The context is NOT reset at episode starts (unlike the memory
agent's temporal window): at an episode's first step the token carries the
last action and reward of the previous episode (e.g. ``-1``: it ended on a
trap), and the stack sees all the earlier episodes.

Training (as the seed paper trains all its agents): each update runs a batch
of trials of ``T = algo.trial.num_steps`` steps with the current policy (sampling),
labels every visited step with the path-planning expert's action, and does
behaviour cloning (cross-entropy, Adam, gradient clipping). The stack runs
once over each recorded trial with causal masks.

Acting: the policy carry holds the stack's final features of the last
``context`` steps and their attention keys and values (a ring buffer), and
their validity; each step computes the new step's features only, reading the
earlier ones from that window
(:meth:`jaxmeta.nets.snail.SNAIL.step`), and the head reads them. Padding is
exactly zero in every layer, so while the trial has at most ``context`` steps
(training, since ``context >= algo.trial.num_steps`` is required) acting and
training compute the same logits. In longer trials, such as evaluation's
``algo.eval.episodes * max_steps_in_episode`` steps, every step keeps the features
computed when it was the newest: attention reads the last ``context`` steps,
whose features summarise the earlier ones (as Transformer-XL's memory), so
nothing is forgotten outright at the window's edge.

Evaluation (the paper's protocol for SNAIL): on held-out tasks, one trial per
task of ``algo.eval.episodes`` episodes of the same task; all frames of the
previous episodes (not only failures) are in the context.

Read top to bottom: config, the policy's pieces (module-level pure functions), ``make_parts``
(init, update, evaluate).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from envs_jax.tasks import num_tasks
from jaxmeta.algos.api import (
    Algo,
    EnvSetup,
    EpisodesEvalConfig,
    Metrics,
    TrainState,
    TrialConfig,
    check_eval_tasks,
    clipped_adam,
    episode_metrics,
    first_tasks,
    labelled_trials,
    make_env_setup,
    per_episode_metrics,
    require_discrete_actions,
    require_task_interface,
    trial_env_steps,
)
from jaxmeta.config import ConfigError, param, section
from jaxmeta.nets.snail import BLOCK_KINDS, SnailPolicy
from jaxmeta.reports import episodes_report
from jaxmeta.trial import StepInputs, TrialData, run_trials


@dataclasses.dataclass
class Config:
    name: str = param("snail", "method: SNAIL, attention over the whole trial so far (Mishra et al. 2017)")
    context: int = param(
        80, "steps attention reads (the last ones in longer trials); >= algo.trial.num_steps", min=1
    )
    blocks: list[str] = param(
        ["tc", "tc", "attention", "tc", "attention"], "the stack, bottom first", choices=BLOCK_KINDS
    )
    features: int = param(32, "width of the step token Phi(o, a, r)", min=1)
    filters: int = param(32, "channels each dense block of a TC block adds", min=1)
    key_size: int = param(32, "query/key width of the attention blocks", min=1)
    value_size: int = param(32, "channels each attention block adds", min=1)
    hidden: int = param(128, "hidden width of the observation MLP and the action head", min=1)
    conv_channels: list[int] = param([16, 16], "channels of the 3x3 convolutions of the CNN", min=1)
    learning_rate: float = param(3e-4, "Adam step size", min=0.0, min_exclusive=True)
    max_grad_norm: float = param(1.0, "clip gradients to this global norm", min=0.0, min_exclusive=True)
    num_train_tasks: int = param(1000, "fixed training tasks", min=1)
    num_test_tasks: int = param(
        256, "held-out test tasks (evaluation uses algo.eval.num_tasks of them)", min=1
    )
    trial: TrialConfig = section(TrialConfig, "training trials")
    eval: EpisodesEvalConfig = section(EpisodesEvalConfig, "evaluation: episodes of held-out tasks")


def validate_config(cfg: Any) -> None:
    algo = cfg.algo
    require_task_interface(cfg, expert=True)
    require_discrete_actions(cfg)
    check_eval_tasks(cfg)
    if algo.context < algo.trial.num_steps:
        raise ConfigError(
            f"algo.context={algo.context} must be >= algo.trial.num_steps={algo.trial.num_steps} "
            "(training reads whole trials; acting must see the same steps)"
        )
    if not algo.blocks:
        raise ConfigError(f"algo.blocks must name at least one block ({', '.join(BLOCK_KINDS)})")


@struct.dataclass
class Window:
    """The policy's carry while acting: the window of the last ``context`` steps (their final stack
    features, then their attention keys and values; see :meth:`jaxmeta.nets.snail.SNAIL.step`)."""

    rows: jax.Array  # SnailPolicy.window_shape: a ring buffer, zero where invalid
    valid: jax.Array  # [context] bool
    newest: jax.Array  # int32: index of the newest step in the ring


# ----------------------------------------------------------------------------- the policy, piece by piece
def make_network(algo_cfg: Config, num_actions: int) -> SnailPolicy:
    """The SNAIL stack and head of a config's ``algo`` section."""
    return SnailPolicy(
        num_actions=num_actions,
        context=algo_cfg.context,
        features=algo_cfg.features,
        filters=algo_cfg.filters,
        key_size=algo_cfg.key_size,
        value_size=algo_cfg.value_size,
        hidden=algo_cfg.hidden,
        conv_channels=tuple(algo_cfg.conv_channels),
        blocks=tuple(algo_cfg.blocks),
    )


def empty_window(network: SnailPolicy) -> Window:
    """The acting carry at the start of a trial: nothing seen yet."""
    return Window(
        rows=jnp.zeros(network.window_shape),
        valid=jnp.zeros((network.context,), bool),
        newest=jnp.int32(network.context - 1),
    )


def step_logits(
    network: SnailPolicy, params: Any, inputs: StepInputs, window: Window
) -> tuple[jax.Array, Window]:
    """This step's features from the window's; append them (dropping the oldest), read the logits."""
    num_actions = network.num_actions
    first = inputs.episode_start & (inputs.episode_index == 0)  # first step of the trial
    prev_action = jnp.where(first, num_actions, inputs.prev_action)
    prev_reward = jnp.where(first, 0.0, inputs.prev_reward)
    token = network.apply(
        params, inputs.obs, prev_action, prev_reward, inputs.episode_start, method=SnailPolicy.token
    )
    logits, *rows = network.apply(
        params, token, window.rows, window.valid, window.newest, method=SnailPolicy.step_logits
    )
    return logits, Window(*rows)


def act(
    network: SnailPolicy,
    params: Any,
    inputs: StepInputs,
    window: Window,
    key: jax.Array,
    greedy: bool = False,
) -> tuple[jax.Array, Window]:
    """One acting step: sample (or, ``greedy``, take the most likely) action; the window moves on."""
    logits, window = step_logits(network, params, inputs, window)
    action = jnp.argmax(logits) if greedy else jax.random.categorical(key, logits)
    return action, window


def trial_logits(network: SnailPolicy, params: Any, data: TrialData) -> jax.Array:
    """Logits of every step of one recorded trial (``[T, A]``, ``T <= context``), in one pass."""
    num_actions = network.num_actions
    steps = data.action.shape[0]
    start = jnp.concatenate([jnp.ones((1,), bool), data.done[:-1]])
    prev_action = jnp.concatenate([jnp.full((1,), num_actions, jnp.int32), data.action[:-1]])
    prev_reward = jnp.concatenate([jnp.zeros((1,)), data.reward[:-1]])
    tokens = network.apply(params, data.obs, prev_action, prev_reward, start, method=SnailPolicy.token)
    return network.apply(params, tokens, jnp.ones((steps,), bool), method=SnailPolicy.logits)


# ----------------------------------------------------------------------------- wiring
class Parts(NamedTuple):
    """What :func:`make` wires together, for tests and for users composing their own loop."""

    algo: Algo
    network: SnailPolicy
    setup: EnvSetup  # env, params, train and test tasks


def make(cfg: Any) -> Algo:
    """Build ``init``, ``update`` and ``evaluate`` for a validated run config."""
    return make_parts(cfg).algo


def make_parts(cfg: Any) -> Parts:
    """The method's wiring: network, optimiser, task sets, and the pure functions of the contract."""
    algo_cfg = cfg.algo
    setup = make_env_setup(cfg, algo_cfg.num_train_tasks, algo_cfg.num_test_tasks)
    env, env_params = setup.env, setup.params
    network = make_network(algo_cfg, env.num_actions)
    optimizer = clipped_adam(algo_cfg.learning_rate, algo_cfg.max_grad_norm)
    obs_space = env.observation_space(env_params)
    obs_example = jnp.zeros(obs_space.shape, obs_space.dtype)
    test_tasks = first_tasks(setup.test_tasks, algo_cfg.eval.num_tasks)
    start_window = empty_window(network)

    def sample_policy(params: Any, inputs: StepInputs, window: Window, memory: Any, key: jax.Array) -> Any:
        return act(network, params, inputs, window, key)

    def greedy_policy(params: Any, inputs: StepInputs, window: Window, memory: Any, key: jax.Array) -> Any:
        return act(network, params, inputs, window, key, greedy=True)

    def init(key: jax.Array) -> TrainState:
        key, init_key = jax.random.split(key)
        params = network.init(
            init_key, obs_example, jnp.int32(env.num_actions), jnp.float32(0.0), jnp.bool_(True)
        )
        return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

    def update(state: TrainState) -> tuple[TrainState, Metrics]:
        key, task_key, trial_key = jax.random.split(state.key, 3)
        data, episodes = labelled_trials(
            setup,
            algo_cfg.trial,
            sample_policy,
            state.params,
            start_window,
            setup.train_tasks,
            num_tasks(setup.train_tasks),
            task_key,
            trial_key,
        )
        labels = data.extras

        def loss_fn(params: Any) -> tuple[jax.Array, jax.Array]:
            logits = jax.vmap(trial_logits, in_axes=(None, None, 0))(network, params, data)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, (jnp.argmax(logits, -1) == labels).mean()

        (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "accuracy": accuracy,
            "env_steps": trial_env_steps(state.update_step, algo_cfg.trial),
            **episode_metrics(episodes, "train/"),
        }
        return TrainState(params, opt_state, key, state.update_step + 1), metrics

    def evaluate(state: TrainState, key: jax.Array) -> Metrics:
        """Held-out tasks: one trial of eval.episodes episodes each, the context spanning them."""
        num_episodes = algo_cfg.eval.episodes
        _, episodes, _ = run_trials(
            env,
            env_params,
            greedy_policy if algo_cfg.eval.greedy else sample_policy,
            state.params,
            start_window,
            test_tasks,
            jnp.arange(algo_cfg.eval.num_tasks),
            key,
            num_episodes * env_params.max_steps_in_episode,
            "same",
            max_episodes=num_episodes,
        )
        return per_episode_metrics(episodes)

    trial = algo_cfg.trial
    report = episodes_report(
        env,
        env_params,
        test_tasks,
        algo_cfg.eval.episodes,
        cfg.task_seed,
        describe=f"{trial.batch_size} trials x {trial.num_steps} steps",
    )
    return Parts(Algo("snail", init, update, evaluate, report), network, setup)
