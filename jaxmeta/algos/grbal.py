"""GrBAL (Clavera, Nagabandi et al. 2019; the lecture seed's "Learning to Adapt", Algorithms 1 and 2):
a dynamics model meta-trained so that one gradient step on the last M transitions adapts it to the
dynamics at hand, used by a random-shooting MPC that re-adapts the model at every step.

* The model ``f(s, a) -> s' - s`` is an MLP on scaled inputs (:func:`predict_delta`).
* **Algorithm 1** (``meta_train: true``): from stored trajectories, draw a time t in each of E
  trajectories; adapt on the M transitions before t (:func:`jaxmeta.meta.adapt`, one SGD step; with
  ``learn_step_size`` the step size is meta-learned too, as GrBAL's update rule ``u``) and take an
  Adam step on the error over the K transitions from t (:func:`jaxmeta.meta.maml_loss`).
  ``meta_train: false`` trains the same model on all transitions by plain regression: the
  "model trained on all data" of GrBAL's naive fine-tuning baseline.
* **Algorithm 2** (:func:`mpc_action`): at every step adapt the model on the episode's last M
  transitions (fewer at the start: masked), sample ``num_candidates`` action sequences of
  ``horizon`` steps uniformly, roll them through the adapted model, sum the env's reward
  (``env.planning_reward``), act with the first action of the best.
* **Data collection** as the paper: each update collects episodes on fresh tasks with the current
  model's MPC (random actions for the first ``random_iterations`` updates), stores them, and trains
  the model ``model_steps`` times.

Evaluation runs the MPC on held-out tasks twice: re-adapting at every step (``eval/return``: GrBAL,
or naive fine-tuning for a ``meta_train: false`` run) and never adapting (``eval/return_no_adaptation``),
and reports the one-step prediction error of the model before and after adaptation along the adapted
episodes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmeta import meta
from jaxmeta.algos.api import Algo, Metrics, make_env_setup, require_task_interface
from jaxmeta.config import ConfigError, param, section
from jaxmeta.nets.mlp import MLP
from jaxmeta.reports import returns_report


@dataclasses.dataclass
class EvalConfig:
    num_tasks: int = param(16, "held-out tasks, one MPC episode each (adapted and not)", min=1)


@dataclasses.dataclass
class Config:
    name: str = param("grbal", "method: GrBAL, a meta-learned adaptive dynamics model with MPC")
    meta_train: bool = param(True, "meta-train for adaptation (GrBAL); false: plain regression on all data")
    hidden_sizes: list[int] = param(
        [64, 64], "model MLP widths (the paper: 512 x 3, too slow for a CPU MPC)", min=1
    )
    past_steps: int = param(16, "M: recent transitions the model adapts on", min=1)
    future_steps: int = param(16, "K: transitions after them the adapted model is judged on", min=1)
    inner_steps: int = param(1, "gradient steps of adaptation (GrBAL: 1)", min=1)
    inner_step_size: float = param(
        0.01, "adaptation step size (its initial value if learned)", min=0.0, min_exclusive=True
    )
    learn_step_size: bool = param(True, "meta-learn the adaptation step size (GrBAL's update rule u)")
    meta_batch_size: int = param(32, "E: trajectory windows per model step", min=1)
    learning_rate: float = param(1e-3, "Adam step size of the model", min=0.0, min_exclusive=True)
    model_steps: int = param(200, "model gradient steps per update, after collecting", min=1)
    episodes_per_update: int = param(8, "episodes collected per update, each on a fresh task", min=1)
    buffer_episodes: int = param(400, "episodes kept (the oldest are replaced)", min=1)
    random_iterations: int = param(1, "updates that collect with uniform random actions first", min=0)
    num_candidates: int = param(1000, "MPC: action sequences sampled per step (GrBAL: 1000)", min=1)
    horizon: int = param(10, "MPC: planning horizon H (GrBAL: 10)", min=1)
    num_train_tasks: int = param(0, "fixed training tasks; 0: a fresh task for every episode", min=0)
    num_test_tasks: int = param(64, "held-out tasks (evaluation uses algo.eval.num_tasks of them)", min=1)
    eval: EvalConfig = section(EvalConfig, "evaluation: MPC episodes on held-out tasks")


def validate_config(cfg: Any) -> None:
    from gymnax.environments import spaces

    from jaxmeta.algos.api import check_eval_tasks, make_env

    env, params = make_env(cfg.env)
    space = env.action_space(params)
    if not isinstance(space, spaces.Box):
        raise ConfigError(
            f"grbal plans continuous actions; {cfg.env.id} has a {type(space).__name__} action space: "
            "choose a continuous-action env such as AdaptivePendulum-v0"
        )
    if not hasattr(env, "planning_reward"):
        raise ConfigError(
            f"grbal plans with the env's reward function; {cfg.env.id} has no planning_reward "
            "(AdaptivePendulum-v0 has)"
        )
    require_task_interface(cfg)
    check_eval_tasks(cfg)
    length = params.max_steps_in_episode
    if cfg.algo.past_steps + cfg.algo.future_steps > length:
        raise ConfigError(
            f"algo.past_steps + algo.future_steps must fit in one episode of {length} steps, "
            f"got {cfg.algo.past_steps} + {cfg.algo.future_steps}"
        )


@struct.dataclass
class Episodes:
    """Stored trajectories: ``obs [N, T + 1, S]``, ``action [N, T, A]``, ``valid [N]``."""

    obs: jax.Array
    action: jax.Array
    valid: jax.Array
    position: jax.Array  # next row to write


@struct.dataclass
class GrbalState:
    params: Any  # {"model": ..., "step_size": scalar (learned or fixed)}
    opt_state: Any
    episodes: Episodes
    key: jax.Array
    update_step: jax.Array


# ----------------------------------------------------------------------------- the model
def predict_delta(model: MLP, params: Any, obs: jax.Array, action: jax.Array, scales: tuple) -> jax.Array:
    """``s' - s`` predicted for ``obs [..., S]`` and ``action [..., A]`` (inputs and outputs scaled by the
    env's bounds so that every coordinate is O(1))."""
    obs_scale, action_scale, delta_scale = scales
    x = jnp.concatenate([obs / obs_scale, action / action_scale], axis=-1)
    return model.apply(params, x) * delta_scale


def transition_loss(model: MLP, scales: tuple) -> Any:
    """``loss(params, (obs, action, next_obs, mask))``: masked mean squared error of the scaled deltas."""

    def loss(params: Any, batch: tuple) -> jax.Array:
        obs, action, next_obs, mask = batch
        error = (predict_delta(model, params, obs, action, scales) - (next_obs - obs)) / scales[2]
        per_step = jnp.mean(error**2, axis=-1)
        return jnp.sum(per_step * mask) / jnp.maximum(jnp.sum(mask), 1.0)

    return loss


def plan(
    model: MLP, params: Any, obs: jax.Array, candidates: jax.Array, *, reward_fn: Any, scales: tuple
) -> tuple[jax.Array, jax.Array]:
    """Roll every candidate action sequence ``[N, H, A]`` through the model from ``obs`` and sum the
    rewards (Algorithm 2, lines 3-10); returns the best sequence's first action and every total ``[N]``."""

    def step(
        carry: tuple[jax.Array, jax.Array], actions: jax.Array
    ) -> tuple[tuple[jax.Array, jax.Array], None]:
        states, total = carry
        total = total + reward_fn(states, actions)
        return (states + predict_delta(model, params, states, actions, scales), total), None

    start = jnp.broadcast_to(obs, (candidates.shape[0], *obs.shape))
    (_, totals), _ = jax.lax.scan(
        step, (start, jnp.zeros(candidates.shape[0])), jnp.swapaxes(candidates, 0, 1)
    )
    return candidates[jnp.argmax(totals), 0], totals


def mpc_action(
    model: MLP,
    params: Any,
    obs: jax.Array,
    key: jax.Array,
    *,
    reward_fn: Any,
    low: jax.Array,
    high: jax.Array,
    num_candidates: int,
    horizon: int,
    scales: tuple,
) -> jax.Array:
    """Algorithm 2's random-shooting planner: the first action of the best of ``num_candidates`` action
    sequences of ``horizon`` steps drawn uniformly in ``[low, high]`` (:func:`plan`)."""
    candidates = jax.random.uniform(key, (num_candidates, horizon, *low.shape), minval=low, maxval=high)
    return plan(model, params, obs, candidates, reward_fn=reward_fn, scales=scales)[0]


def make(cfg: Any) -> Algo:
    """Build ``init``, ``update`` and ``evaluate`` for a validated run config."""
    algo_cfg = cfg.algo
    setup = make_env_setup(cfg, algo_cfg.num_train_tasks, algo_cfg.num_test_tasks)
    env, env_params = setup.env, setup.params
    obs_space, action_space = env.observation_space(env_params), env.action_space(env_params)
    low, high = (
        jnp.broadcast_to(jnp.asarray(b, jnp.float32), action_space.shape)
        for b in (action_space.low, action_space.high)
    )
    obs_dim, action_dim = obs_space.shape[0], action_space.shape[0]
    # Scales from the env's bounds; one step's change is taken as a quarter of a coordinate's range.
    obs_scale = jnp.maximum(
        jnp.abs(jnp.broadcast_to(jnp.asarray(obs_space.high, jnp.float32), obs_space.shape)), 1e-3
    )
    scales = (obs_scale, jnp.maximum(jnp.abs(high), 1e-3), obs_scale / 4)
    model = MLP((*algo_cfg.hidden_sizes, obs_dim))
    loss_fn = transition_loss(model, scales)
    optimizer = optax.adam(algo_cfg.learning_rate)
    length = env_params.max_steps_in_episode
    M, K = algo_cfg.past_steps, algo_cfg.future_steps

    def reward_fn(obs: jax.Array, action: jax.Array) -> jax.Array:
        return env.planning_reward(obs, action, env_params)

    def adapted(params: Any, history: tuple) -> Any:
        return meta.adapt(loss_fn, params["model"], history, algo_cfg.inner_steps, params["step_size"])

    def episode(params: Any, task: Any, key: jax.Array, adapt: bool, random_actions: jax.Array) -> dict:
        """One MPC episode on ``task``: re-adapting on the last M transitions at every step if ``adapt``
        (or uniform random actions where ``random_actions``). Returns the trajectory and errors."""
        reset_key, key = jax.random.split(key)
        obs, state = env.reset_to_task(reset_key, task, env_params)
        empty = (jnp.zeros((M, obs_dim)), jnp.zeros((M, action_dim)), jnp.zeros((M, obs_dim)), jnp.zeros(M))

        def step(carry: tuple, step_key: jax.Array) -> tuple[tuple, dict]:
            obs, state, history = carry
            plan_key, random_key, env_key = jax.random.split(step_key, 3)
            adapted_params = adapted(
                params, history
            )  # planned with if adapt; its error is reported either way
            model_params = adapted_params if adapt else params["model"]
            planned = mpc_action(
                model,
                model_params,
                obs,
                plan_key,
                reward_fn=reward_fn,
                low=low,
                high=high,
                num_candidates=algo_cfg.num_candidates,
                horizon=algo_cfg.horizon,
                scales=scales,
            )
            uniform = jax.random.uniform(random_key, low.shape, minval=low, maxval=high)
            action = jnp.where(random_actions, uniform, planned)
            next_obs, state, reward, _, _, info = env.step(env_key, state, action, env_params)
            next_obs = info["final_observation"]  # the episode's own last frame, not a reset's
            one = (obs[None], action[None], next_obs[None], jnp.ones(1))
            errors = {
                f"model_error_{name}": loss_fn(p, one)
                for name, p in (("before", params["model"]), ("after", adapted_params))
            }
            history = jax.tree.map(lambda h, x: jnp.concatenate([h[1:], x]), history, one)
            return (next_obs, state, history), {"obs": obs, "action": action, "reward": reward, **errors}

        (last_obs, _, _), out = jax.lax.scan(step, (obs, state, empty), jax.random.split(key, length))
        return {**out, "last_obs": last_obs}  # the frame after the last action

    def collect(params: Any, tasks: Any, key: jax.Array, random_actions: jax.Array) -> dict:
        keys = jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])
        return jax.vmap(lambda t, k: episode(params, t, k, True, random_actions))(tasks, keys)

    def training_tasks(key: jax.Array) -> Any:
        count = algo_cfg.episodes_per_update
        if algo_cfg.num_train_tasks == 0:
            return jax.vmap(env.sample_task, in_axes=(0, None))(jax.random.split(key, count), env_params)
        ids = jax.random.randint(key, (count,), 0, algo_cfg.num_train_tasks)
        return jax.tree.map(lambda x: x[ids], setup.train_tasks)

    def store(episodes: Episodes, trajectories: dict, next_obs_last: jax.Array) -> Episodes:
        count = trajectories["action"].shape[0]
        rows = (episodes.position + jnp.arange(count)) % algo_cfg.buffer_episodes
        obs = jnp.concatenate([trajectories["obs"], next_obs_last[:, None]], axis=1)
        return Episodes(
            obs=episodes.obs.at[rows].set(obs),
            action=episodes.action.at[rows].set(trajectories["action"]),
            valid=episodes.valid.at[rows].set(True),
            position=(episodes.position + count) % algo_cfg.buffer_episodes,
        )

    def windows(episodes: Episodes, key: jax.Array, count: int, span: int) -> tuple:
        """``count`` windows of ``span`` transitions from random stored episodes (valid rows only)."""
        row_key, time_key = jax.random.split(key)
        weights = episodes.valid / jnp.maximum(episodes.valid.sum(), 1)
        rows = jax.random.choice(row_key, algo_cfg.buffer_episodes, (count,), p=weights)
        starts = jax.random.randint(time_key, (count,), 0, length - span + 1)
        times = starts[:, None] + jnp.arange(span)
        obs = episodes.obs[rows[:, None], times]
        next_obs = episodes.obs[rows[:, None], times + 1]
        action = episodes.action[rows[:, None], times]
        return obs, action, next_obs, jnp.ones((count, span))

    def model_objective(params: Any, key: jax.Array, episodes: Episodes) -> jax.Array:
        obs, action, next_obs, mask = windows(episodes, key, algo_cfg.meta_batch_size, M + K)
        if not algo_cfg.meta_train:  # plain regression on every transition of the windows
            return loss_fn(params["model"], (obs, action, next_obs, mask))
        split = lambda x: (x[:, :M], x[:, M:])  # noqa: E731
        parts = [split(x) for x in (obs, action, next_obs, mask)]
        support = tuple(p[0] for p in parts)
        query = tuple(p[1] for p in parts)
        return meta.maml_loss(
            params["model"],
            support,
            query,
            inner_loss=loss_fn,
            num_steps=algo_cfg.inner_steps,
            step_size=params["step_size"],
        )

    def init(key: jax.Array) -> GrbalState:
        key, init_key = jax.random.split(key)
        model_params = model.init(init_key, jnp.zeros((1, obs_dim + action_dim)))
        params = {"model": model_params, "step_size": jnp.asarray(algo_cfg.inner_step_size, jnp.float32)}
        n = algo_cfg.buffer_episodes
        episodes = Episodes(
            obs=jnp.zeros((n, length + 1, obs_dim)),
            action=jnp.zeros((n, length, action_dim)),
            valid=jnp.zeros(n, bool),
            position=jnp.zeros((), jnp.int32),
        )
        return GrbalState(params, optimizer.init(params), episodes, key, jnp.zeros((), jnp.int32))

    def update(state: GrbalState) -> tuple[GrbalState, Metrics]:
        key, task_key, collect_key, train_key = jax.random.split(state.key, 4)
        random_actions = state.update_step < algo_cfg.random_iterations
        out = collect(state.params, training_tasks(task_key), collect_key, random_actions)
        episodes = store(state.episodes, out, out["last_obs"])

        def train_step(carry: tuple, step_key: jax.Array) -> tuple[tuple, jax.Array]:
            params, opt_state = carry
            value, grads = jax.value_and_grad(model_objective)(params, step_key, episodes)
            if not (algo_cfg.meta_train and algo_cfg.learn_step_size):
                grads = {**grads, "step_size": jnp.zeros_like(grads["step_size"])}
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, opt_state), losses = jax.lax.scan(
            train_step, (state.params, state.opt_state), jax.random.split(train_key, algo_cfg.model_steps)
        )
        step = state.update_step + 1
        metrics = {
            "loss": losses[-1],
            "step_size": params["step_size"],
            "train/return": out["reward"].sum(1).mean(),
            "model_error_before": out["model_error_before"].mean(),
            "model_error_after": out["model_error_after"].mean(),
            "env_steps": (step * algo_cfg.episodes_per_update * length).astype(jnp.float32),
        }
        return GrbalState(params, opt_state, episodes, key, step), metrics

    test_tasks = jax.tree.map(lambda x: x[: algo_cfg.eval.num_tasks], setup.test_tasks)

    def evaluate(state: GrbalState, key: jax.Array) -> Metrics:
        keys = jax.random.split(key, algo_cfg.eval.num_tasks)
        no = jnp.zeros((), bool)
        adapted_runs = jax.vmap(lambda t, k: episode(state.params, t, k, True, no))(test_tasks, keys)
        fixed_runs = jax.vmap(lambda t, k: episode(state.params, t, k, False, no))(test_tasks, keys)
        metrics = {
            "eval/return": adapted_runs["reward"].sum(1).mean(),
            "eval/return_no_adaptation": fixed_runs["reward"].sum(1).mean(),
            "eval/model_error_before": adapted_runs["model_error_before"].mean(),
            "eval/model_error_after": adapted_runs["model_error_after"].mean(),
        }
        # Tasks whose dynamics change within the episode (an env's task may say so: change_step).
        change_step = getattr(test_tasks, "change_step", None)
        if change_step is not None:
            changed = (change_step < length).astype(jnp.float32)
            for name, runs in (("", adapted_runs), ("_no_adaptation", fixed_runs)):
                returns = runs["reward"].sum(1)
                metrics[f"eval/return_changed{name}"] = (returns * changed).sum() / jnp.maximum(
                    changed.sum(), 1
                )
        return metrics

    kind = "GrBAL" if algo_cfg.meta_train else "model on all data, fine-tuned online"
    describe = (
        f"{kind}: {algo_cfg.episodes_per_update} MPC episodes ({algo_cfg.num_candidates} x H="
        f"{algo_cfg.horizon}), {algo_cfg.model_steps} model steps"
    )
    report = returns_report(
        describe,
        extra_curves=(
            ("eval/return_no_adaptation", "evaluation return, model not adapted"),
            ("eval/model_error_before", "one-step model error before adaptation"),
            ("eval/model_error_after", "one-step model error after adaptation"),
        ),
    )

    def animation(state: GrbalState, plots_dir: Any) -> list[Any]:
        """``plots/held_out_episode.gif``: the first held-out task whose motor is crippled, the MPC with
        the model re-adapted at every step (left) and never adapted (right), side by side."""
        import numpy as np

        from jaxmeta.plots import write_gif

        change_step = getattr(test_tasks, "change_step", None)
        index = 0 if change_step is None else int(np.argmax(np.asarray(change_step) < length))
        task = jax.tree.map(lambda x: x[index], test_tasks)
        key, no = jax.random.PRNGKey(0), jnp.zeros((), bool)
        runs = [
            jax.jit(episode, static_argnums=3)(state.params, task, key, adapt, no) for adapt in (True, False)
        ]
        thetas = [np.arctan2(np.asarray(r["obs"][:, 1]), np.asarray(r["obs"][:, 0])) for r in runs]
        returns = [np.cumsum(np.asarray(r["reward"])) for r in runs]
        steps = None if change_step is None else int(change_step[index])
        frames, captions = [], []
        for t in range(0, length, 2):
            frames.append(np.concatenate([pendulum_frame(th[t]) for th in thetas], axis=1))
            crippled = steps is not None and t >= steps
            captions.append(
                f"t={t:3d} {'CRIPPLED' if crippled else 'motor ok'}  adapted {returns[0][t]:7.1f} | "
                f"not adapted {returns[1][t]:7.1f}"
            )
        return [write_gif(frames, captions, Path(plots_dir) / "held_out_episode.gif", fps=10)]

    return Algo("grbal", init, update, evaluate, report._replace(animation=animation))


def pendulum_frame(theta: float, size: int = 120) -> Any:
    """A picture of the pendulum at angle ``theta`` (0 = upright), uint8 ``[size, size, 3]``."""
    import numpy as np
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    centre, radius = size / 2, size * 0.38
    tip = (centre + radius * np.sin(theta), centre - radius * np.cos(theta))
    draw.line([(centre, centre), tip], fill=(40, 90, 200), width=6)
    draw.ellipse([tip[0] - 7, tip[1] - 7, tip[0] + 7, tip[1] + 7], fill=(200, 60, 40))
    draw.ellipse([centre - 3, centre - 3, centre + 3, centre + 3], fill="black")
    return np.asarray(image)
