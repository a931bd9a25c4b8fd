"""POET, the Paired Open-Ended Trailblazer (Wang et al. 2019; the lecture seed's Algorithm 2), on
``Walker-v0``'s parameterised terrains, with every pair's ES step, every mutation and every transfer in
one compiled program.

The active list is ``max_active`` rows of (terrain encoding, OpenES state of its paired agent, score,
creation time) with an ``active`` mask; the archive holds every terrain ever admitted (active ones too).
One update is one POET iteration ``t``:

1. **MUTATE_ENVS** when ``t > 0`` and ``t % reproduce_every == 0``: parents are the active pairs whose
   score reaches ``repro_threshold``; ``num_children`` children are drawn (a uniform parent each,
   ``env.mutate_encoding``: POET's reproducer); a child already in the archive is dropped; the rest must
   pass the minimal criterion ``[mc_low, mc_high]`` with their parent's agent, and are ranked by novelty
   (mean distance to the ``novelty_k`` nearest archived encodings). In that order, up to
   ``max_admitted`` children are admitted, each with the best of all active agents on it (a transfer,
   as POET's reference), if that agent's score passes the criterion too; when the list is full the
   oldest pair is retired to the archive first.
2. **ES_STEP** for every active pair (Algorithm 1 with OpenES: ``jaxmeta.evolution.open_es``), then the
   pair's score: its new agent's mean return over ``eval_episodes`` fresh layouts of its terrain.
3. **Transfers** when ``t % transfer_every == 0`` and two or more pairs are active: for each target
   pair, every other agent is tried directly and, with ``transfer_proposals``, after one ES step on the
   target (a proposal from the target's search state, Adam's step with ``propose_with_adam``); the
   best candidate replaces the target's agent if it beats the target's own score (this iteration's, as
   POET; with ``transfer_history: N`` the best of its last N, Enhanced POET's stricter test), with
   Adam and sigma restarted (POET's ``set_theta(..., reset_optimizer=True)``; the step size stays).
   All targets decide from the same agents (Algorithm 2's
   ``theta_{t+1}``).

ANNECS (Enhanced POET, Wang et al. 2020): the number of terrains created after the first that passed the
minimal criterion (were admitted) and were later solved (a score >= ``solved_threshold``).

Scores are on this walker's scale (a finished 24 m course ~200, BipedalWalker's ~300): POET's
reproduction threshold 200 and minimal criterion [25, 340] are rescaled by 2/3 (``docs/walker.md``).

Cost grows with the active pairs, not the capacity: rows are visited by ``lax.map`` and inactive ones
skipped by ``lax.cond``. Under ``vmap`` a ``cond`` would run both branches, so seeds run one after
another (``vmappable=False``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from jaxmeta.algos.api import Algo, Metrics, Report, TerrainESConfig, terrain_setup
from jaxmeta.config import ConfigError, param, section
from jaxmeta.evolution import open_es, poet_ops
from jaxmeta.evolution.rollouts import FlatMLP, evaluate_on_terrain, population_fitness, walkers_gif


@dataclasses.dataclass
class EvalConfig:
    episodes: int = param(16, "fresh layouts each active pair is evaluated on", min=1)


@dataclasses.dataclass
class Config(TerrainESConfig):
    name: str = param("poet", "method: POET, open-ended coevolution of terrains and walkers")
    max_active: int = param(20, "capacity of the active list (POET: 20-40)", min=1)
    archive_size: int = param(64, "terrains the archive can hold (every admitted one)", min=1)
    reproduce_every: int = param(150, "N_mutate: iterations between MUTATE_ENVS (POET: 150-200)", min=1)
    transfer_every: int = param(25, "N_transfer: iterations between transfer attempts (POET: 25)", min=1)
    num_children: int = param(8, "children proposed per MUTATE_ENVS (POET: 8)", min=1)
    max_admitted: int = param(1, "children admitted per MUTATE_ENVS at most (POET: 1)", min=1)
    repro_threshold: float = param(133.0, "score a parent needs to reproduce (POET: 200, x 2/3)")
    mc_low: float = param(16.7, "minimal criterion, low end (POET: 25, x 2/3)")
    mc_high: float = param(226.7, "minimal criterion, high end (POET: 340, x 2/3)")
    novelty_k: int = param(5, "nearest archived terrains in the novelty score (POET: 5)", min=1)
    transfer_proposals: bool = param(True, "also try every agent after one ES step on the target (POET)")
    transfer_history: int = param(
        1,
        "a transfer must beat the best of the target's last N scores (POET: 1, this iteration's; "
        "Enhanced POET: 5)",
        min=1,
    )
    propose_with_adam: bool = param(True, "proposals take Adam's step (POET's runs: --propose_with_adam)")
    eval: EvalConfig = section(EvalConfig, "evaluation of the active pairs")


def validate_config(cfg: Any) -> None:
    algo_cfg = cfg.algo
    terrain_setup(cfg)
    if algo_cfg.mc_low > algo_cfg.mc_high:
        raise ConfigError(
            "the minimal criterion needs algo.mc_low <= algo.mc_high, "
            f"got {algo_cfg.mc_low} > {algo_cfg.mc_high}"
        )
    if algo_cfg.max_admitted > algo_cfg.num_children:
        raise ConfigError(
            f"algo.max_admitted ({algo_cfg.max_admitted}) cannot exceed "
            f"algo.num_children ({algo_cfg.num_children})"
        )
    needed = 1 + algo_cfg.max_admitted * (cfg.num_updates // algo_cfg.reproduce_every)
    if algo_cfg.archive_size < needed:
        raise ConfigError(
            f"algo.archive_size must hold every terrain the run can admit: 1 + max_admitted x "
            f"(num_updates // reproduce_every) = {needed}, got {algo_cfg.archive_size}"
        )


NEVER = jnp.float32(-jnp.inf)  # the score of a candidate that was not tried (never stored)


@struct.dataclass
class PoetState:
    es: open_es.ESState  # every field with a leading [max_active] axis
    terrain: jax.Array  # [max_active, E] encodings
    active: jax.Array  # [max_active] bool
    score: jax.Array  # [max_active] the latest score of each pair's agent on its terrain
    recent: jax.Array  # [max_active, transfer_history] its latest scores, newest first
    created_at: jax.Array  # [max_active] int32, the iteration a pair was admitted
    archive_row: jax.Array  # [max_active] int32, where each pair's terrain is in the archive
    archive: jax.Array  # [archive_size, E]
    archive_valid: jax.Array  # [archive_size] bool
    archive_solved: jax.Array  # [archive_size] bool: some agent of that terrain's pair reached solved
    archive_count: jax.Array  # int32
    transfers: jax.Array  # int32, accepted transfers so far
    episodes: jax.Array  # float32, episodes simulated so far (each max_steps steps: fixed-length scans)
    key: jax.Array
    iteration: jax.Array  # int32


class PoetParts(NamedTuple):
    """POET's pure functions for one config (``build``): the runner's three and the steps of an
    iteration, which tests and notebooks call on states of their own."""

    init: Callable[[jax.Array], PoetState]
    update: Callable[[PoetState], tuple[PoetState, Metrics]]
    evaluate: Callable[[PoetState, jax.Array], Metrics]
    mutate_envs: Callable[[PoetState, jax.Array], tuple[PoetState, Metrics]]
    es_steps: Callable[[PoetState, jax.Array], tuple[PoetState, jax.Array]]
    transfers: Callable[[PoetState, jax.Array], tuple[PoetState, jax.Array]]
    score_on: Callable[[jax.Array, jax.Array, jax.Array, int], jax.Array]
    policy: FlatMLP
    env: Any
    env_params: Any


def build(cfg: Any) -> PoetParts:
    """POET's functions for a validated run config (see the module docstring)."""
    algo_cfg = cfg.algo
    env, env_params, settings, policy = terrain_setup(cfg)
    capacity, steps = algo_cfg.max_active, algo_cfg.max_steps
    first_terrain = env.encode(env_params)

    def score_on(flat: jax.Array, encoding: jax.Array, key: jax.Array, episodes: int) -> jax.Array:
        return evaluate_on_terrain(env, env_params, policy, flat, encoding, key, episodes, steps)[0]

    def es_step(
        es: open_es.ESState, encoding: jax.Array, key: jax.Array
    ) -> tuple[open_es.ESState, jax.Array, jax.Array]:
        """One ES step of a pair, then its score: ``(es, score, population's mean fitness)``."""
        ask_key, play_key, eval_key = jax.random.split(key, 3)
        population, noise = open_es.ask(ask_key, es, settings)
        fitness = population_fitness(env, env_params, policy, population, encoding, play_key, steps)
        es = open_es.tell(es, noise, fitness, settings)
        return es, score_on(es.mean, encoding, eval_key, algo_cfg.eval_episodes), fitness.mean()

    def init(key: jax.Array) -> PoetState:
        key, policy_key = jax.random.split(key)
        one = open_es.init(policy.init(policy_key), settings)
        es = jax.tree.map(lambda x: jnp.broadcast_to(x, (capacity, *x.shape)), one)
        zeros = jnp.zeros((capacity,), jnp.int32)
        archive = jnp.zeros((algo_cfg.archive_size, first_terrain.shape[0])).at[0].set(first_terrain)
        return PoetState(
            es=es,
            terrain=jnp.zeros((capacity, first_terrain.shape[0])).at[0].set(first_terrain),
            active=jnp.zeros((capacity,), bool).at[0].set(True),
            score=jnp.zeros((capacity,)),  # read only where active (the state must stay finite)
            recent=jnp.zeros((capacity, algo_cfg.transfer_history)),
            created_at=zeros,
            archive_row=zeros,
            archive=archive,
            archive_valid=jnp.zeros((algo_cfg.archive_size,), bool).at[0].set(True),
            archive_solved=jnp.zeros((algo_cfg.archive_size,), bool),
            archive_count=jnp.ones((), jnp.int32),
            transfers=jnp.zeros((), jnp.int32),
            episodes=jnp.zeros((), jnp.float32),
            key=key,
            iteration=jnp.zeros((), jnp.int32),
        )

    def simulated(state: PoetState, episodes: Any) -> PoetState:
        """Count episodes where they are simulated (fixed-shape work: every row a vmap touches)."""
        return state.replace(episodes=state.episodes + jnp.asarray(episodes, jnp.float32))

    # ------------------------------------------------------------------ 1. MUTATE_ENVS
    def mutate_envs(state: PoetState, key: jax.Array) -> tuple[PoetState, Metrics]:
        parent_key, child_key, mc_key, admit_key = jax.random.split(key, 4)
        parents = state.active & (state.score >= algo_cfg.repro_threshold)
        picks = jax.random.categorical(
            parent_key, jnp.where(parents, 0.0, -jnp.inf), shape=(algo_cfg.num_children,)
        )
        children = jax.vmap(env.mutate_encoding)(
            jax.random.split(child_key, algo_cfg.num_children), state.terrain[picks]
        )
        same = jnp.all(jnp.abs(children[:, None, :] - state.archive[None, :, :]) < 1e-4, axis=-1)
        known = jnp.any(same & state.archive_valid[None, :], axis=1)
        earlier = jnp.all(jnp.abs(children[:, None, :] - children[None, :, :]) < 1e-4, axis=-1)
        repeated = jnp.any(jnp.tril(earlier, k=-1), axis=1)  # a copy of an earlier child
        parent_scores = jax.vmap(lambda p, c, k: score_on(state.es.mean[p], c, k, algo_cfg.eval_episodes))(
            picks, children, jax.random.split(mc_key, algo_cfg.num_children)
        )
        state = simulated(state, algo_cfg.num_children * algo_cfg.eval_episodes)
        eligible = (
            parents.any()
            & ~known
            & ~repeated
            & poet_ops.passes_minimal_criterion(parent_scores, algo_cfg.mc_low, algo_cfg.mc_high)
        )
        novelty = poet_ops.novelty(children, state.archive, state.archive_valid, algo_cfg.novelty_k)
        order = poet_ops.admission_order(novelty, eligible)
        admitted = jnp.zeros((), jnp.int32)
        for rank, k in enumerate(jax.random.split(admit_key, algo_cfg.max_admitted)):
            state, admit = try_admit(state, children[order[rank]], eligible[order[rank]], k)
            admitted += admit.astype(jnp.int32)
        metrics = {
            "mutation/parents": parents.sum().astype(jnp.float32),
            "mutation/children_passing_mc": eligible.sum().astype(jnp.float32),
            "mutation/admitted": admitted.astype(jnp.float32),
        }
        return state, metrics

    def try_admit(
        state: PoetState, child: jax.Array, eligible: jax.Array, key: jax.Array
    ) -> tuple[PoetState, jax.Array]:
        """Admit an eligible ``child`` paired with the best active agent on it, if that agent's score
        passes the minimal criterion too (and the archive has room)."""
        scores = jax.vmap(lambda flat, k: score_on(flat, child, k, algo_cfg.eval_episodes))(
            state.es.mean, jax.random.split(key, capacity)
        )
        state = simulated(state, capacity * algo_cfg.eval_episodes)  # every row, active or not
        scores = jnp.where(state.active, scores, -jnp.inf)
        best = jnp.argmax(scores)
        admit = (
            eligible
            & poet_ops.passes_minimal_criterion(scores[best], algo_cfg.mc_low, algo_cfg.mc_high)
            & (state.archive_count < algo_cfg.archive_size)
        )
        state = jax.lax.cond(admit, lambda s: admit_child(s, child, best, scores[best]), lambda s: s, state)
        return state, admit

    def admit_child(state: PoetState, child: jax.Array, source: jax.Array, score: jax.Array) -> PoetState:
        """Put ``child`` with a copy of agent ``source`` (fresh optimiser) in a free row, retiring the
        oldest pair first when the list is full."""
        active = poet_ops.retire_oldest(state.active, state.created_at, capacity - 1)
        row = jnp.argmin(active)  # the first free row
        fresh = open_es.init(state.es.mean[source], settings)
        es = jax.tree.map(lambda rows, x: rows.at[row].set(x), state.es, fresh)
        slot = state.archive_count
        return state.replace(
            es=es,
            terrain=state.terrain.at[row].set(child),
            active=active.at[row].set(True),
            score=state.score.at[row].set(score),
            recent=state.recent.at[row].set(score),
            created_at=state.created_at.at[row].set(state.iteration),
            archive_row=state.archive_row.at[row].set(slot),
            archive=state.archive.at[slot].set(child),
            archive_valid=state.archive_valid.at[slot].set(True),
            archive_count=slot + 1,
        )

    # ------------------------------------------------------------------ 2. ES steps
    def es_steps(state: PoetState, key: jax.Array) -> tuple[PoetState, jax.Array]:
        def row(args: tuple) -> tuple:
            es, encoding, active, score, k = args
            skip = lambda: (es, score, jnp.zeros(()))  # noqa: E731
            return jax.lax.cond(active, lambda: es_step(es, encoding, k), skip)

        keys = jax.random.split(key, capacity)
        es, score, fitness = jax.lax.map(row, (state.es, state.terrain, state.active, state.score, keys))
        recent = jnp.where(
            state.active[:, None],
            jnp.concatenate([score[:, None], state.recent[:, :-1]], axis=1),
            state.recent,
        )
        per_pair = algo_cfg.es.population_size + algo_cfg.eval_episodes
        return simulated(
            state.replace(es=es, score=score, recent=recent), state.active.sum() * per_pair
        ), fitness

    # ------------------------------------------------------------------ 3. transfers
    def transfer_candidates(state: PoetState, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """For each target row: the scores of every agent directly and after a proposal step on it, and
        the proposals themselves ``[capacity, capacity, D]``."""

        def target(args: tuple) -> tuple:
            m, es_m, encoding, active_m, k = args

            def try_source(inner: tuple) -> tuple:
                j, kk = inner
                tryable = active_m & state.active[j] & (j != m)
                flat = state.es.mean[j]

                def run() -> tuple:
                    direct_key, ask_key, play_key, eval_key = jax.random.split(kk, 4)
                    direct = score_on(flat, encoding, direct_key, algo_cfg.eval_episodes)
                    if not algo_cfg.transfer_proposals:
                        return direct, NEVER, flat
                    from_source = es_m.replace(mean=flat)
                    population, noise = open_es.ask(ask_key, from_source, settings)
                    fitness = population_fitness(
                        env, env_params, policy, population, encoding, play_key, steps
                    )
                    proposal = open_es.propose(
                        from_source, noise, fitness, settings, algo_cfg.propose_with_adam
                    )
                    return direct, score_on(proposal, encoding, eval_key, algo_cfg.eval_episodes), proposal

                never = lambda: (NEVER, NEVER, flat)  # noqa: E731
                return jax.lax.cond(tryable, run, never)

            return jax.lax.map(try_source, (jnp.arange(capacity), jax.random.split(k, capacity)))

        rows = jnp.arange(capacity)
        keys = jax.random.split(key, capacity)
        return jax.lax.map(target, (rows, state.es, state.terrain, state.active, keys))

    def transfers(state: PoetState, key: jax.Array) -> tuple[PoetState, jax.Array]:
        direct, proposed, proposals = transfer_candidates(state, key)
        tried = state.active.sum() * (state.active.sum() - 1)  # every active agent on every other terrain
        per_try = algo_cfg.eval_episodes
        if algo_cfg.transfer_proposals:
            per_try += algo_cfg.es.population_size + algo_cfg.eval_episodes
        state = simulated(state, tried * per_try)
        rows = jnp.arange(capacity)
        # POET: beat this iteration's own score; Enhanced POET: the best of the last few.
        own = jnp.max(state.recent, axis=1)
        source, is_proposal, better = jax.vmap(poet_ops.choose_transfer)(
            own, direct, proposed, rows[:, None] == rows[None, :]
        )
        accept = better & state.active
        chosen_direct = state.es.mean[jnp.maximum(source, 0)]
        chosen_proposal = proposals[rows, jnp.maximum(source, 0)]  # [capacity, D]
        theta = jnp.where(is_proposal[:, None], chosen_proposal, chosen_direct)
        picked = jnp.maximum(source, 0)
        new_score = jnp.where(is_proposal, proposed[rows, picked], direct[rows, picked])
        # POET's set_theta(theta, reset_optimizer=True): Adam and sigma restart, the step size stays.
        fresh = jax.vmap(lambda es, flat: open_es.reset_optimizer(es, settings, flat))(state.es, theta)
        es = jax.tree.map(
            lambda new, old: jnp.where(accept.reshape((-1,) + (1,) * (old.ndim - 1)), new, old),
            fresh,
            state.es,
        )
        state = state.replace(
            es=es,
            score=jnp.where(accept, new_score, state.score),
            recent=jnp.where(accept[:, None], new_score[:, None], state.recent),
            transfers=state.transfers + accept.sum().astype(jnp.int32),
        )
        return state, accept.sum()

    # ------------------------------------------------------------------ one iteration
    def update(state: PoetState) -> tuple[PoetState, Metrics]:
        key, mutate_key, step_key, transfer_key = jax.random.split(state.key, 4)
        t = state.iteration
        reproduce = (t > 0) & (t % algo_cfg.reproduce_every == 0)
        no_mutation = {
            "mutation/parents": jnp.zeros(()),
            "mutation/children_passing_mc": jnp.zeros(()),
            "mutation/admitted": jnp.zeros(()),
        }
        state, mutation = jax.lax.cond(
            reproduce, lambda s: mutate_envs(s, mutate_key), lambda s: (s, no_mutation), state
        )
        state, fitness = es_steps(state, step_key)
        attempt = (t % algo_cfg.transfer_every == 0) & (state.active.sum() > 1)
        state, accepted = jax.lax.cond(
            attempt, lambda s: transfers(s, transfer_key), lambda s: (s, jnp.zeros((), jnp.int32)), state
        )
        solved_rows = state.active & (state.score >= algo_cfg.solved_threshold)
        archive_solved = state.archive_solved.at[state.archive_row].max(solved_rows)
        state = state.replace(archive_solved=archive_solved, key=key, iteration=t + 1)
        active = state.active
        n_active = active.sum()
        metrics = {
            **mutation,
            "active_pairs": n_active.astype(jnp.float32),
            "annecs": annecs(state).astype(jnp.float32),
            "archive": state.archive_count.astype(jnp.float32),
            "transfers_accepted": accepted.astype(jnp.float32),
            "score/mean": jnp.where(active, state.score, 0.0).sum() / jnp.maximum(n_active, 1),
            "score/max": jnp.max(jnp.where(active, state.score, -jnp.inf)),
            "fitness/mean": jnp.where(active, fitness, 0.0).sum() / jnp.maximum(n_active, 1),
            "episodes": state.episodes,
            **terrain_metrics(state.terrain, active, "terrain/max_"),
            **terrain_metrics(state.terrain, solved_rows, "terrain/solved_max_"),
        }
        return state, metrics

    def annecs(state: PoetState) -> jax.Array:
        created = jnp.arange(algo_cfg.archive_size) > 0  # the first terrain was not created by POET
        return (state.archive_valid & state.archive_solved & created).sum()

    def terrain_metrics(terrain: jax.Array, rows: jax.Array, prefix: str) -> Metrics:
        return {
            prefix + name: jnp.max(jnp.where(rows, terrain[:, i], 0.0))
            for i, name in enumerate(env.encoding_names)
        }

    def evaluate(state: PoetState, key: jax.Array) -> Metrics:
        scores = jax.vmap(lambda flat, enc, k: score_on(flat, enc, k, algo_cfg.eval.episodes))(
            state.es.mean, state.terrain, jax.random.split(key, capacity)
        )
        scores = jnp.where(state.active, scores, jnp.nan)
        solved = state.active & (scores >= algo_cfg.solved_threshold)
        return {
            "eval/annecs": annecs(state).astype(jnp.float32),
            "eval/active_pairs": state.active.sum().astype(jnp.float32),
            "eval/solved_pairs": solved.sum().astype(jnp.float32),
            "eval/mean_score": jnp.nanmean(scores),
            "eval/pair_scores": scores,
            "eval/pair_terrains": jnp.where(state.active[:, None], state.terrain, jnp.nan),
            **terrain_metrics(state.terrain, solved, "eval/solved_max_"),
        }

    return PoetParts(
        init, update, evaluate, mutate_envs, es_steps, transfers, score_on, policy, env, env_params
    )


def make(cfg: Any) -> Algo:
    """The runner's ``init``, ``update``, ``evaluate`` and report for a validated run config."""
    algo_cfg, parts = cfg.algo, build(cfg)
    describe = (
        f"POET: up to {algo_cfg.max_active} pairs x OpenES {algo_cfg.es.population_size} x "
        f"{algo_cfg.max_steps}-step episodes; mutate every {algo_cfg.reproduce_every}, "
        f"transfer every {algo_cfg.transfer_every}"
    )
    report = Report(
        describe=describe,
        headline="eval/annecs",
        progress=(("pairs", "active_pairs"), ("ANNECS", "annecs"), ("best", "score/max")),
        samples="episodes",
        curves=(
            ("annecs", "ANNECS"),
            ("active_pairs", "active pairs"),
            ("score/max", "best pair score"),
            ("terrain/solved_max_stump_high", "highest stumps solved (m)"),
            ("terrain/solved_max_gap_high", "widest gaps solved (m)"),
            ("terrain/solved_max_roughness", "roughest ground solved"),
        ),
        animation=lambda state, plots_dir: [
            paired_walkers_gif(parts, state, algo_cfg.max_steps, Path(plots_dir))
        ],
    )
    return Algo("poet", parts.init, parts.update, parts.evaluate, report, vmappable=False)


def paired_walkers_gif(parts: PoetParts, state: PoetState, max_steps: int, plots_dir: Path) -> Path:
    """``plots/paired_walkers.gif``: up to six active pairs, each agent on one fresh layout of its own
    terrain, one above the other."""
    import numpy as np

    rows = [int(i) for i in np.flatnonzero(np.asarray(state.active))][:6]
    return walkers_gif(
        parts.env,
        parts.env_params,
        parts.policy,
        [state.es.mean[row] for row in rows],
        [state.terrain[row] for row in rows],
        rows,
        max_steps,
        f"POET iteration {int(state.iteration)}: paired walkers",
        plots_dir / "paired_walkers.gif",
    )
