"""Learning to learn from failures with per-task memory banks (Chen & Agrawal, 2020).

A policy that keeps, for every training task, a bank of its own past failures
across trials, and learns by imitation to use them: at each step it attends
from the current observation over the task's stored failed episodes
(``jaxmeta.nets.FailureMemoryPolicy``), optionally also over the steps of the
current episode so far ("Memory + Temporal").

Training (section 2 and 3 of the paper):

1. A fixed set of training tasks, one failure bank each, kept on the device
   across updates (part of the train state).
2. Each update draws ``tasks_per_update`` of the training tasks (without
   replacement) and runs a batch of trials of ``T = algo.trial.num_steps`` steps on them with the
   current policy (``diff`` resets = RESET_DIFF draw the next episode's task
   from that draw, ``same`` = RESET_SAME); the banks are read, not written,
   during the trial. Only the drawn tasks' banks are encoded, so the cost of
   an update does not grow with the number of training tasks.
3. Every visited step is labelled with the path-planning expert's action and
   the policy is trained by behaviour cloning, so it learns to recover from
   the states its own mistakes lead to.
4. At the end of the trial the failed episodes (ended without success) are cut
   to their last ``L`` steps and added to their task's bank; a full bank drops
   its oldest episode.

Evaluation (the paper's protocol): on held-out tasks the bank starts empty;
the agent plays ``algo.eval.episodes`` episodes of the same task, and after each
failed one its last ``L`` steps go into the bank before the next episode.

Read top to bottom: config, state, the policy's pieces and the test protocol (module-level
pure functions), ``make_parts`` (init, update, evaluate).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from envs_jax.tasks import num_tasks
from jaxmeta.algos.api import (
    Algo,
    EnvSetup,
    EpisodesEvalConfig,
    Metrics,
    TrialConfig,
    adaptation_metrics,
    check_eval_tasks,
    clipped_adam,
    episode_metrics,
    first_tasks,
    labelled_trials,
    make_env,
    make_env_setup,
    require_discrete_actions,
    require_task_interface,
    trial_env_steps,
)
from jaxmeta.config import ConfigError, param, section
from jaxmeta.memory import failure_bank
from jaxmeta.nets.failure_memory import FailureMemoryPolicy
from jaxmeta.reports import episodes_report
from jaxmeta.trial import Adaptation, StepInputs, TrialData, failures_for_bank, run_adaptation


@dataclasses.dataclass
class Config:
    name: str = param("failure_replay", "method: memory banks of past failures (Chen & Agrawal 2020)")
    temporal: bool = param(False, "also attend over the current episode's steps (Memory + Temporal)")
    bank_capacity: int = param(8, "N: failed episodes kept per task (oldest dropped)", min=1)
    bank_length: int = param(1, "L: last steps stored per failed episode", min=1)
    features: int = param(64, "E: embedding width", min=1)
    num_heads: int = param(4, "attention heads (must divide features)", min=1)
    encoder_layers: int = param(1, "transformer layers of the trajectory encoder", min=1)
    hidden: int = param(128, "hidden width of the MLPs", min=1)
    conv_channels: list[int] = param([16, 16], "channels of the 3x3 convolutions of the CNN", min=1)
    temporal_window: int = param(32, "steps of the current episode the temporal attention sees", min=1)
    max_episodes_per_trial: int = param(
        16, "episode slots cut per trial for the banks; later ones are not stored", min=1
    )
    learning_rate: float = param(3e-4, "Adam step size", min=0.0, min_exclusive=True)
    max_grad_norm: float = param(1.0, "clip gradients to this global norm", min=0.0, min_exclusive=True)
    num_train_tasks: int = param(1000, "fixed training tasks, one bank each", min=1)
    tasks_per_update: int = param(
        256,
        "training tasks drawn (without replacement) for each update's trials; only their banks are "
        "encoded; >= num_train_tasks uses every task",
        min=1,
    )
    num_test_tasks: int = param(
        256, "held-out test tasks (evaluation uses algo.eval.num_tasks of them)", min=1
    )
    trial: TrialConfig = section(TrialConfig, "training trials")
    eval: EpisodesEvalConfig = section(EpisodesEvalConfig, "evaluation: the test protocol on held-out tasks")


def validate_config(cfg: Any) -> None:
    algo = cfg.algo
    require_task_interface(cfg, expert=True)
    require_discrete_actions(cfg)
    check_eval_tasks(cfg)
    _, env_params = make_env(cfg.env)
    max_steps = int(env_params.max_steps_in_episode)
    if algo.bank_length > max_steps:
        raise ConfigError(
            f"algo.bank_length (L={algo.bank_length}) must be <= the episode limit "
            f"env.max_steps_in_episode={max_steps}"
        )
    if algo.features % algo.num_heads:
        raise ConfigError(f"algo.num_heads={algo.num_heads} must divide algo.features={algo.features}")


@struct.dataclass
class TrainState:
    params: Any
    opt_state: Any
    bank: failure_bank.FailureBank  # one bank per training task, kept across updates
    key: jax.Array
    update_step: jax.Array


@struct.dataclass
class Window:
    """The policy's carry while acting: tokens of the current episode so far."""

    tokens: jax.Array  # [K, E], newest last
    valid: jax.Array  # [K] bool
    time: jax.Array  # int32, steps since the episode started


class TaskPool(NamedTuple):
    """The training tasks one update's trials run on."""

    task_ids: jax.Array  # int32 [P]: their indices among the training tasks
    tasks: Any  # the tasks themselves, [P, ...]
    bank: failure_bank.FailureBank  # their banks, [P, ...] (a copy; writes go to the full banks)


# ----------------------------------------------------------------------------- the policy, piece by piece
def make_network(algo_cfg: Config, num_actions: int) -> FailureMemoryPolicy:
    """The memory-bank policy of a config's ``algo`` section."""
    return FailureMemoryPolicy(
        num_actions=num_actions,
        bank_length=algo_cfg.bank_length,
        features=algo_cfg.features,
        num_heads=algo_cfg.num_heads,
        encoder_layers=algo_cfg.encoder_layers,
        hidden=algo_cfg.hidden,
        conv_channels=tuple(algo_cfg.conv_channels),
        temporal=algo_cfg.temporal,
        temporal_window=algo_cfg.temporal_window,
    )


def step_example(obs_space: Any) -> dict[str, jax.Array]:
    """One stored step (``failure_bank.init``'s example): the frame, the action, the reward."""
    return {
        "obs": jnp.zeros(obs_space.shape, obs_space.dtype),
        "action": jnp.zeros((), jnp.int32),
        "reward": jnp.zeros((), jnp.float32),
    }


def empty_window(network: FailureMemoryPolicy) -> Window:
    """The acting carry at the start of a trial."""
    return Window(
        tokens=jnp.zeros((network.temporal_window, network.features)),
        valid=jnp.zeros((network.temporal_window,), bool),
        time=jnp.zeros((), jnp.int32),
    )


def encode_banks(network: FailureMemoryPolicy, params: Any, bank: failure_bank.FailureBank) -> dict:
    """The memory the policy reads: one vector per stored episode of every bank, and the slot masks."""
    vectors = network.apply(params, bank.steps, bank.step_mask, method=FailureMemoryPolicy.encode_bank)
    return {"episodes": vectors, "slot_mask": bank.slot_mask}


def act(
    network: FailureMemoryPolicy,
    params: Any,
    inputs: StepInputs,
    window: Window,
    memory: dict,
    key: jax.Array,
    greedy: bool = False,
) -> tuple[jax.Array, Window]:
    """One acting step: read the task's bank (``memory[inputs.task_id]``), sample (or, ``greedy``,
    take the most likely) action; the temporal window moves on."""
    num_actions = network.num_actions
    start = inputs.episode_start
    # A new episode: forget the last one's steps; its first token has "no action yet".
    valid = jnp.where(start, False, window.valid)
    time = jnp.where(start, 0, window.time)
    prev_action = jnp.where(start, num_actions, inputs.prev_action)
    prev_reward = jnp.where(start, 0.0, inputs.prev_reward)
    valid = jnp.concatenate([valid[1:], jnp.ones((1,), bool)])
    logits, tokens = network.apply(
        params,
        inputs.obs,
        prev_action,
        prev_reward,
        time,
        window.tokens,
        valid,
        memory["episodes"][inputs.task_id],
        memory["slot_mask"][inputs.task_id],
        method=FailureMemoryPolicy.act,
    )
    action = jnp.argmax(logits) if greedy else jax.random.categorical(key, logits)
    return action, Window(tokens=tokens, valid=valid, time=time + 1)


def trial_logits(network: FailureMemoryPolicy, params: Any, data: TrialData, memory: dict) -> jax.Array:
    """Logits of every step of one recorded trial (``[T, A]``), as the acting policy computed them."""
    num_actions, window_len = network.num_actions, network.temporal_window
    steps = data.action.shape[0]
    t = jnp.arange(steps)
    start = jnp.concatenate([jnp.ones((1,), bool), data.done[:-1]])
    start_pos = jax.lax.cummax(jnp.where(start, t, 0))
    query = network.apply(params, data.obs, method=FailureMemoryPolicy.query)
    m = network.apply(
        params,
        query,
        memory["episodes"][data.task_id],
        memory["slot_mask"][data.task_id],
        method=FailureMemoryPolicy.read_memory,
    )
    if not network.temporal:
        return network.apply(params, query, m, method=FailureMemoryPolicy.logits)
    prev_action = jnp.where(
        start, num_actions, jnp.concatenate([jnp.zeros((1,), jnp.int32), data.action[:-1]])
    )
    prev_reward = jnp.where(start, 0.0, jnp.concatenate([jnp.zeros((1,)), data.reward[:-1]]))
    tokens = network.apply(
        params, data.obs, prev_action, prev_reward, t - start_pos, method=FailureMemoryPolicy.step_token
    )
    # Step q sees steps k of its own episode with q - window < k <= q: the acting window.
    same_episode = start_pos[:, None] == start_pos[None, :]
    visible = same_episode & (t[None, :] <= t[:, None]) & (t[:, None] - t[None, :] < window_len)
    v_o = network.apply(params, tokens, tokens, visible[None], method=FailureMemoryPolicy.temporal_features)
    return network.apply(params, v_o, m, method=FailureMemoryPolicy.logits)


def policy_fn(network: FailureMemoryPolicy, greedy: bool = False) -> Any:
    """``act`` as a ``jaxmeta.trial`` policy function."""

    def policy(params: Any, inputs: StepInputs, window: Window, memory: dict, key: jax.Array) -> Any:
        return act(network, params, inputs, window, memory, key, greedy)

    return policy


def draw_pool(key: jax.Array, bank: failure_bank.FailureBank, train_tasks: Any, pool_size: int) -> TaskPool:
    """One update's training tasks and their banks: ``pool_size`` tasks without replacement
    (every task, in order, if the pool is all of them)."""
    num_train_tasks = bank.num_tasks
    if pool_size >= num_train_tasks:
        ids = jnp.arange(num_train_tasks)
    else:
        ids = jax.random.choice(key, num_train_tasks, (pool_size,), replace=False)
    take = lambda leaf: leaf[ids]  # noqa: E731
    return TaskPool(ids, jax.tree.map(take, train_tasks), jax.tree.map(take, bank))


def collect(
    network: FailureMemoryPolicy, setup: EnvSetup, algo_cfg: Config, state: TrainState
) -> tuple[TrialData, Any, TaskPool]:
    """A batch of training trials by the current policy on a fresh task pool, every step labelled by
    the expert (``data.extras``). Task ids in the data index the pool (``pool.task_ids`` maps them
    to training tasks)."""
    _, pool_key, task_key, trial_key = jax.random.split(state.key, 4)
    pool_size = min(algo_cfg.tasks_per_update, state.bank.num_tasks)
    pool = draw_pool(pool_key, state.bank, setup.train_tasks, pool_size)
    data, episodes = labelled_trials(
        setup,
        algo_cfg.trial,
        policy_fn(network),
        state.params,
        empty_window(network),
        pool.tasks,
        pool_size,
        task_key,
        trial_key,
        memory=encode_banks(network, state.params, pool.bank),
        max_episodes=algo_cfg.max_episodes_per_trial,
    )
    return data, episodes, pool


def evaluation_trials(
    network: FailureMemoryPolicy,
    env: Any,
    env_params: Any,
    params: Any,
    tasks: Any,
    key: jax.Array,
    num_episodes: int,
    capacity: int,
    greedy: bool = False,
    keep_data: bool = False,
    record_fn: Any = None,
) -> Adaptation:
    """The test protocol on ``tasks``: banks start empty; ``num_episodes`` episodes of each task, and
    after each failed one its last L steps join the task's bank (``Adaptation.state`` holds the final
    banks; ``observed`` the banks each episode read)."""
    length = network.bank_length
    banks = failure_bank.init(
        num_tasks(tasks), capacity, length, step_example(env.observation_space(env_params))
    )

    def write_failures(bank: failure_bank.FailureBank, data: TrialData, episodes: Any) -> tuple[Any, None]:
        return failure_bank.add(bank, *failures_for_bank(data, episodes, length, 1)), None

    return run_adaptation(
        env,
        env_params,
        policy_fn(network, greedy),
        tasks,
        key,
        num_episodes,
        banks,
        act=lambda bank: (params, encode_banks(network, params, bank)),
        adapt=write_failures,
        policy_carry=empty_window(network),
        observe=(lambda bank: bank) if keep_data else None,
        keep_data=keep_data,
        record_fn=record_fn,
    )


def is_image_space(space: Any) -> bool:
    """Whether observations of ``space`` are RGB pictures (uint8 ``[H, W, 3]``) a GIF can show."""
    shape = tuple(getattr(space, "shape", ()))
    return len(shape) == 3 and shape[-1] == 3 and jnp.dtype(getattr(space, "dtype", jnp.float32)) == jnp.uint8


def enlarged(frame: np.ndarray, height: int = 120) -> np.ndarray:
    """``frame`` repeated pixel by pixel to at least ``height`` rows (a 30 x 40 view is too small to see)."""
    scale = max(1, -(-height // frame.shape[0]))
    return np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)


def trial_frames(
    network: FailureMemoryPolicy,
    env: Any,
    env_params: Any,
    params: Any,
    task: Any,
    num_episodes: int,
    capacity: int,
    greedy: bool = False,
    key: jax.Array | None = None,
) -> tuple[list[np.ndarray], list[str]]:
    """Pictures of the test protocol on one held-out ``task`` (stacked, ``[1, ...]``): every step of
    every episode, captioned with the episode, the step and how many failures the bank held; the end
    of each episode is held for three frames. A pure-JAX env is drawn with ``env.render`` (the last
    frame of an episode re-steps its final action from the state before it: exact for a deterministic
    environment such as Gridworld); an env without ``render`` whose observations are RGB pictures (a
    host env's first-person view) is shown as the agent saw it, ending on the observation the last
    action led to."""
    key = jax.random.PRNGKey(0) if key is None else key
    drawn = hasattr(env, "render")
    record = (lambda s: s) if drawn else None
    out = jax.jit(
        lambda params, key: evaluation_trials(
            network, env, env_params, params, task, key, num_episodes, capacity, greedy, True, record
        )
    )(params, key)
    if drawn:
        render = jax.jit(lambda state: env.render(state, env_params))
        last_state = jax.jit(lambda state, action: env.step_env(key, state, action, env_params)[1])
    frames, captions = [], []
    for k in range(num_episodes):
        one = jax.tree.map(lambda x, k=k: x[k, 0], out.data)
        steps = int((np.asarray(one.episode_index) == 0).sum())
        held = int(failure_bank.size(jax.tree.map(lambda x, k=k: x[k], out.observed))[0])
        prefix = f"episode {k + 1}/{num_episodes}, bank: {held} failure{'s' if held != 1 else ''}"
        for t in range(steps):
            if drawn:
                frames.append(np.asarray(render(jax.tree.map(lambda x, t=t: x[t], one.extras))))
            else:
                frames.append(enlarged(np.asarray(one.obs[t])))
            captions.append(f"{prefix}, step {t}")
        if drawn:
            before_last = jax.tree.map(lambda x, i=steps - 1: x[i], one.extras)
            final = np.asarray(render(last_state(before_last, one.action[steps - 1])))
        else:
            final = enlarged(np.asarray(one.next_obs[steps - 1]))
        outcome = float(out.returns[k, 0])
        if bool(one.success[steps - 1]):
            ending = f"goal, {outcome:+g}"
        elif bool(one.truncated[steps - 1]):
            ending = f"time limit, {outcome:+g}"
        else:  # ended without the goal: a trap (Gridworld, the room), a death (Procgen)
            ending = f"{'trap' if outcome < 0 else 'failed'}, {outcome:+g}"
        frames += [final] * 3  # linger on how the episode ended
        captions += [f"{prefix}, step {steps}: {ending}"] * 3
    return frames, captions


def animate_trial(
    network: FailureMemoryPolicy,
    env: Any,
    env_params: Any,
    params: Any,
    task: Any,
    num_episodes: int,
    capacity: int,
    path: Any,
    greedy: bool = False,
    key: jax.Array | None = None,
) -> Any:
    """:func:`trial_frames` as a GIF at ``path``; None when the environment neither renders nor
    observes RGB pictures."""
    from jaxmeta import plots

    if not (hasattr(env, "render") or is_image_space(env.observation_space(env_params))):
        return None
    frames, captions = trial_frames(
        network, env, env_params, params, task, num_episodes, capacity, greedy, key
    )
    return plots.write_gif(frames, captions, path, fps=5)


# ----------------------------------------------------------------------------- wiring
class Parts(NamedTuple):
    """What :func:`make` wires together, for tests and for users composing their own loop."""

    algo: Algo
    network: FailureMemoryPolicy
    setup: EnvSetup  # env, params, train and test tasks


def make(cfg: Any) -> Algo:
    """Build ``init``, ``update`` and ``evaluate`` for a validated run config."""
    return make_parts(cfg).algo


def make_parts(cfg: Any) -> Parts:
    """The method's wiring: network, optimiser, task sets, and the pure functions of the contract."""
    algo_cfg = cfg.algo
    setup = make_env_setup(cfg, algo_cfg.num_train_tasks, algo_cfg.num_test_tasks)
    env, env_params = setup.env, setup.params
    length, capacity = algo_cfg.bank_length, algo_cfg.bank_capacity
    network = make_network(algo_cfg, env.num_actions)
    optimizer = clipped_adam(algo_cfg.learning_rate, algo_cfg.max_grad_norm)
    example = step_example(env.observation_space(env_params))
    test_tasks = first_tasks(setup.test_tasks, algo_cfg.eval.num_tasks)

    def init(key: jax.Array) -> TrainState:
        key, init_key = jax.random.split(key)
        bank = failure_bank.init(num_tasks(setup.train_tasks), capacity, length, example)
        one_bank = jax.tree.map(lambda x: x[0], bank)
        params = network.init(
            init_key,
            example["obs"],
            one_bank.steps,
            one_bank.step_mask,
            one_bank.slot_mask,
            jnp.int32(env.num_actions),
            jnp.float32(0.0),
        )
        return TrainState(params, optimizer.init(params), bank, key, jnp.zeros((), jnp.int32))

    def update(state: TrainState) -> tuple[TrainState, Metrics]:
        key = jax.random.split(state.key, 4)[0]  # collect uses the other three
        data, episodes, pool = collect(network, setup, algo_cfg, state)
        labels = data.extras

        def loss_fn(params: Any) -> tuple[jax.Array, jax.Array]:
            memory = encode_banks(network, params, pool.bank)
            logits = jax.vmap(trial_logits, in_axes=(None, None, 0, None))(network, params, data, memory)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, (jnp.argmax(logits, -1) == labels).mean()

        (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # The trial's failures go into their tasks' banks for the next trials.
        pool_task, steps, step_mask, is_failure = failures_for_bank(
            data, episodes, length, algo_cfg.max_episodes_per_trial
        )
        bank = failure_bank.add(state.bank, pool.task_ids[pool_task], steps, step_mask, is_failure)
        metrics = {
            "loss": loss,
            "accuracy": accuracy,
            "bank_fill": failure_bank.size(bank).mean() / capacity,
            "env_steps": trial_env_steps(state.update_step, algo_cfg.trial),
            **episode_metrics(episodes, "train/"),
        }
        return TrainState(params, opt_state, bank, key, state.update_step + 1), metrics

    def evaluate(state: TrainState, key: jax.Array) -> Metrics:
        """Held-out tasks, empty banks; after each failed episode its last L steps join the bank."""
        out = evaluation_trials(
            network,
            env,
            env_params,
            state.params,
            test_tasks,
            key,
            algo_cfg.eval.episodes,
            capacity,
            algo_cfg.eval.greedy,
        )
        return {
            **adaptation_metrics(out.returns, out.success),
            "eval/bank_fill": failure_bank.size(out.state).mean() / capacity,
        }

    trial = algo_cfg.trial
    report = episodes_report(
        env,
        env_params,
        test_tasks,
        algo_cfg.eval.episodes,
        cfg.task_seed,
        describe=f"{trial.batch_size} trials x {trial.num_steps} steps",
        curves=(
            ("loss", "imitation loss"),
            ("accuracy", "agreement with the expert"),
            ("bank_fill", "training banks' fill"),
            ("eval/total_return", "held-out return, whole trial"),
        ),
    )

    def animation(state: TrainState, plots_dir: Any) -> list[Any]:
        path = animate_trial(
            network,
            env,
            env_params,
            state.params,
            first_tasks(test_tasks, 1),
            algo_cfg.eval.episodes,
            capacity,
            Path(plots_dir) / "held_out_trial.gif",
            algo_cfg.eval.greedy,
        )
        return [] if path is None else [path]

    report = report._replace(animation=animation)
    return Parts(Algo("failure_replay", init, update, evaluate, report), network, setup)
