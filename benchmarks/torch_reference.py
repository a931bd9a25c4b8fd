"""Training throughput of ``failure_replay`` against a conventional PyTorch reference.

The same training updates, timed in one process:

* **ours**: ``failure_replay``'s ``update`` under ``jax.jit`` (one call = a
  batch of ``B`` trials of ``T`` steps acted by the current policy, expert
  labels, one Adam step of behaviour cloning, failures added to the banks);
  compile time is reported apart.
* **reference**, written the usual way: a plain-Python Gridworld with the same
  rules, stepped env by env in a Python loop (a list of ``B`` env objects) with
  ``diff`` auto-resets over the update's task pool (``tasks_per_update`` of the
  fixed training tasks, drawn without replacement, as in ours), the expert's
  label from a Python BFS per step; the same network in ``torch.nn`` (eager,
  one batched ``no_grad`` forward pass per step, then one forward/backward over
  the ``B*T`` steps that re-encodes the pool's banks, gradient clipping and
  Adam); the failure banks as Python deques of numpy arrays, one per task.

Both use the sizes of ``configs/memory_x2.yaml`` (B=32, T=80, N=8, L=1, 1000
tasks, a pool of 256 per update; Memory variant, ``temporal: false``). The reference's time is split into
env stepping + expert (Python), policy forward while acting, the learning step
and bank bookkeeping, to show where the conventional way spends it.

    python benchmarks/torch_reference.py [--updates 5] [--warmup 1] [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # main() exits with a one-line message
    torch = None

_BENCH_DIR = Path(__file__).resolve().parent
if str(_BENCH_DIR.parent) not in sys.path:  # run as `python benchmarks/torch_reference.py`
    sys.path.insert(0, str(_BENCH_DIR.parent))

DEFAULT_CONFIG = str(_BENCH_DIR.parent / "configs" / "memory_x2.yaml")
QUICK_OVERRIDES = ("algo.trial.batch_size=4", "algo.trial.num_steps=10", "algo.num_train_tasks=20")
# Moves of actions 0..3 (up, down, left, right) as (row, col) offsets, as in envs_jax.gridworld.
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))
_Module = nn.Module if torch is not None else object


# ====================================================================== reference: environment
class Task(NamedTuple):
    block_cells: tuple[int, ...]
    block_colors: tuple[int, ...]
    goal_index: int
    agent_start: int


class Gridworld:
    """One Gridworld, plain Python: a W x W grid, X coloured blocks, one of them the goal.

    Stepping onto the goal gives +1, onto a trap -1, both end the episode; the
    time limit truncates it. Moves into the border leave the agent in place.
    """

    def __init__(self, size: int, num_colors: int, max_steps: int) -> None:
        self.size, self.num_colors, self.max_steps = size, num_colors, max_steps
        self.task: Task | None = None
        self.task_id = -1
        self.agent = 0
        self.time = 0
        self.obs = self._render()

    def reset(self, task: Task, task_id: int) -> np.ndarray:
        self.task, self.task_id = task, task_id
        self.agent, self.time = task.agent_start, 0
        self.obs = self._render()
        return self.obs

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, bool]:
        """``(next_obs, reward, terminated, truncated, success)``; no reset here."""
        w = self.size
        dr, dc = MOVES[action]
        row = min(max(self.agent // w + dr, 0), w - 1)
        col = min(max(self.agent % w + dc, 0), w - 1)
        self.agent = row * w + col
        self.time += 1
        terminated = self.agent in self.task.block_cells
        success = terminated and self.agent == self.task.block_cells[self.task.goal_index]
        reward = 1.0 if success else (-1.0 if terminated else 0.0)
        truncated = (not terminated) and self.time >= self.max_steps
        self.obs = self._render()
        return self.obs, reward, terminated, truncated, success

    def _render(self) -> np.ndarray:
        """Multi-hot ``W x W x (1 + C)``: channel 0 the agent, channel 1 + c a block of colour c."""
        w = self.size
        obs = np.zeros((w, w, 1 + self.num_colors), np.float32)
        obs[self.agent // w, self.agent % w, 0] = 1.0
        if self.task is not None:
            for cell, color in zip(self.task.block_cells, self.task.block_colors, strict=True):
                obs[cell // w, cell % w, 1 + color] = 1.0
        return obs

    def expert_action(self) -> int:
        """First move of a shortest path to the goal that never enters a trap (BFS from the goal).

        Ties go to the lowest action index; a move onto a trap ranks below every other move.
        """
        w, n = self.size, self.size * self.size
        goal = self.task.block_cells[self.task.goal_index]
        traps = set(self.task.block_cells) - {goal}
        dist = [n] * n  # n = unreachable
        dist[goal] = 0
        queue = collections.deque([goal])
        while queue:
            cell = queue.popleft()
            row, col = divmod(cell, w)
            for dr, dc in MOVES:
                r, c = row + dr, col + dc
                if 0 <= r < w and 0 <= c < w:
                    nxt = r * w + c
                    if nxt not in traps and dist[nxt] > dist[cell] + 1:
                        dist[nxt] = dist[cell] + 1
                        queue.append(nxt)
        row, col = divmod(self.agent, w)
        best, best_cost = 0, None
        for action, (dr, dc) in enumerate(MOVES):
            nxt = min(max(row + dr, 0), w - 1) * w + min(max(col + dc, 0), w - 1)
            cost = n + 1 if nxt in traps else dist[nxt]
            if best_cost is None or cost < best_cost:
                best, best_cost = action, cost
        return best


# ========================================================================== reference: network
class MLP(_Module):
    """Linear layers with ReLU between them (none after the last)."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class Attention(_Module):
    """Multi-head attention with a key mask; a query whose keys are all masked gets uniform
    weights (no NaN), as in flax, so empty bank slots need no special case."""

    def __init__(self, features: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.out = (nn.Linear(features, features) for _ in range(4))

    def forward(self, queries, keys, key_valid):
        """``queries [..., Q, E]``, ``keys [..., K, E]``, ``key_valid [..., K]`` bool."""
        h = self.num_heads
        q = self.q(queries).unflatten(-1, (h, -1))
        k = self.k(keys).unflatten(-1, (h, -1))
        v = self.v(keys).unflatten(-1, (h, -1))
        scores = torch.einsum("...qhd,...khd->...hqk", q, k) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~key_valid[..., None, None, :], torch.finfo(scores.dtype).min)
        out = torch.einsum("...hqk,...khd->...qhd", scores.softmax(-1), v)
        return self.out(out.flatten(-2))


class ObsEncoder(_Module):
    """``MLP(CNN(o))``: 3x3 same-padded convolutions with ReLU, then an MLP to ``E``."""

    def __init__(self, size: int, in_channels: int, conv_channels: list[int], hidden: int, features: int):
        super().__init__()
        chans = [in_channels, *conv_channels]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in itertools.pairwise(chans))
        self.mlp = MLP([size * size * chans[-1], hidden, features])

    def forward(self, obs):
        """``obs [..., W, W, C]`` -> ``[..., E]``."""
        lead = obs.shape[:-3]
        x = obs.reshape(-1, *obs.shape[-3:]).permute(0, 3, 1, 2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.mlp(x.flatten(1)).reshape(*lead, -1)


class TransformerLayer(_Module):
    """Pre-norm transformer layer: masked self-attention then an MLP, both residual."""

    def __init__(self, features: int, num_heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(features, eps=1e-6), nn.LayerNorm(features, eps=1e-6)
        self.attention = Attention(features, num_heads)
        self.mlp = MLP([features, features * mlp_ratio, features])

    def forward(self, x, valid):
        h = self.norm1(x)
        x = x + self.attention(h, h, valid)
        return x + self.mlp(self.norm2(x))


class QueryDecoder(_Module):
    """A learned query ``g`` cross-attends over a masked sequence, then an MLP; both residual."""

    def __init__(self, features: int, num_heads: int) -> None:
        super().__init__()
        self.g = nn.Parameter(0.02 * torch.randn(features))
        self.norm_keys, self.norm_query, self.norm_mlp = (nn.LayerNorm(features, eps=1e-6) for _ in range(3))
        self.attention = Attention(features, num_heads)
        self.mlp = MLP([features, 2 * features, features])

    def forward(self, seq, valid):
        """``seq [..., L, E]``, ``valid [..., L]`` -> ``[..., E]``."""
        query = self.g.expand(*seq.shape[:-2], 1, seq.shape[-1])
        keys = self.norm_keys(seq)
        x = query + self.attention(self.norm_query(query), keys, valid)
        x = x + self.mlp(self.norm_mlp(x))
        return x[..., 0, :]


class GRUGate(_Module):
    """Parisotto et al. (2019) gating: merges ``y`` into the stream ``x``."""

    def __init__(self, features: int, gate_bias: float = 2.0) -> None:
        super().__init__()
        self.gate_bias = gate_bias
        self.w_r, self.w_z, self.w_g = (nn.Linear(features, features) for _ in range(3))
        self.u_r, self.u_z, self.u_g = (nn.Linear(features, features, bias=False) for _ in range(3))

    def forward(self, x, y):
        r = torch.sigmoid(self.w_r(y) + self.u_r(x))
        z = torch.sigmoid(self.w_z(y) + self.u_z(x) - self.gate_bias)
        h = torch.tanh(self.w_g(y) + self.u_g(r * x))
        return (1.0 - z) * x + z * h


class MemoryPolicy(_Module):
    """The Memory policy (no temporal attention) of Chen & Agrawal (2020) in torch.nn."""

    def __init__(self, size: int, obs_channels: int, num_actions: int, algo: Any) -> None:
        super().__init__()
        e, heads = algo.features, algo.num_heads
        self.obs_encoder = ObsEncoder(size, obs_channels, list(algo.conv_channels), algo.hidden, e)
        # Phi: [frame embedding, action embedding (num_actions + 1: "no action yet"), reward dense].
        self.action_embedding = nn.Embedding(num_actions + 1, e)
        self.reward_dense = nn.Linear(1, e)
        self.phi = MLP([3 * e, e, e])
        self.bank_positions = nn.Parameter(0.02 * torch.randn(algo.bank_length, e))
        self.layers = nn.ModuleList(TransformerLayer(e, heads) for _ in range(algo.encoder_layers))
        self.decoder = QueryDecoder(e, heads)
        self.memory_attention = Attention(e, heads)
        self.memory_gate = GRUGate(e)
        self.obs_mlp = nn.Linear(e, e)
        self.head = MLP([2 * e, algo.hidden, num_actions])

    def encode_bank(self, obs, action, reward, step_mask):
        """Banks ``[K, N, L, ...]`` -> one vector per stored episode ``[K, N, E]``."""
        frame = self.obs_encoder(obs)
        merged = torch.cat([frame, self.action_embedding(action), self.reward_dense(reward[..., None])], -1)
        tokens = self.phi(F.relu(merged)) + self.bank_positions
        for layer in self.layers:
            tokens = layer(tokens, step_mask)
        return self.decoder(tokens, step_mask)

    def forward(self, obs, episodes, slot_mask):
        """Logits ``[B, A]`` from ``obs [B, W, W, C]`` and each row's bank ``episodes [B, N, E]``."""
        query = self.obs_encoder(obs)
        attended = self.memory_attention(query[:, None, :], episodes, slot_mask)[:, 0]
        m = self.memory_gate(query, attended)
        m = torch.where(slot_mask.any(-1, keepdim=True), m, torch.zeros_like(m))  # empty bank: m = 0
        return self.head(torch.cat([self.obs_mlp(query), m], -1))


# ========================================================================= reference: training
class Reference:
    """The conventional training loop: Python envs, torch network, banks as deques per task."""

    PARTS = ("env_expert_s", "act_forward_s", "learn_s", "bank_lists_s")

    def __init__(self, cfg: Any, tasks: list[Task], max_steps: int, seed: int = 0) -> None:
        algo = cfg.algo
        if algo.temporal:
            raise SystemExit("torch_reference: only the Memory variant (algo.temporal=false) is written")
        self.batch, self.steps = algo.trial.batch_size, algo.trial.num_steps
        self.size, self.channels = cfg.env.size, 1 + cfg.env.num_colors
        self.capacity, self.length = algo.bank_capacity, algo.bank_length
        self.max_episodes, self.max_grad_norm = algo.max_episodes_per_trial, algo.max_grad_norm
        self.tasks = tasks
        self.pool_size = min(algo.tasks_per_update, len(tasks))
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.envs = [Gridworld(self.size, cfg.env.num_colors, max_steps) for _ in range(self.batch)]
        self.policy = MemoryPolicy(self.size, self.channels, 4, algo)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=algo.learning_rate)
        # One bank per task: the last L steps (next_obs, action, reward) of each stored failure.
        self.banks = [collections.deque(maxlen=self.capacity) for _ in tasks]

    def bank_tensors(self, pool: list[int]) -> tuple[Any, ...]:
        """The pool's banks as padded tensors ``[P, N, L, ...]`` with step and slot masks."""
        k, n, length, w = len(pool), self.capacity, self.length, self.size
        obs = np.zeros((k, n, length, w, w, self.channels), np.float32)
        action = np.zeros((k, n, length), np.int64)
        reward = np.zeros((k, n, length), np.float32)
        step_mask = np.zeros((k, n, length), bool)
        slot_mask = np.zeros((k, n), bool)
        for task, task_id in enumerate(pool):
            for slot, episode in enumerate(self.banks[task_id]):
                slot_mask[task, slot] = True
                start = length - len(episode)  # right-aligned: the final step at L-1
                for i, (step_obs, step_action, step_reward) in enumerate(episode):
                    obs[task, slot, start + i] = step_obs
                    action[task, slot, start + i] = step_action
                    reward[task, slot, start + i] = step_reward
                    step_mask[task, slot, start + i] = True
        return tuple(torch.from_numpy(x) for x in (obs, action, reward, step_mask, slot_mask))

    def update(self) -> tuple[dict[str, float], dict[str, float]]:
        """One training update; returns (seconds per part, metrics)."""
        b_size, t_size, w, c = self.batch, self.steps, self.size, self.channels
        clock = dict.fromkeys(self.PARTS, 0.0)
        clock["act_bank_encode_s"] = 0.0  # part of act_forward_s

        t0 = time.perf_counter()
        pool = self.rng.choice(len(self.tasks), self.pool_size, replace=False).tolist()
        bank_obs, bank_action, bank_reward, step_mask, slot_mask = self.bank_tensors(pool)
        clock["bank_lists_s"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        with torch.no_grad():  # the banks are read, not written, during the trials
            episodes = self.policy.encode_bank(bank_obs, bank_action, bank_reward, step_mask)
        clock["act_bank_encode_s"] = time.perf_counter() - t0
        clock["act_forward_s"] += clock["act_bank_encode_s"]

        t0 = time.perf_counter()
        obs_buf = np.zeros((t_size, b_size, w, w, c), np.float32)
        label_buf = np.zeros((t_size, b_size), np.int64)
        task_buf = np.zeros((t_size, b_size), np.int64)
        for env in self.envs:  # env.task_id is the index in the pool
            task_id = int(self.rng.integers(self.pool_size))
            env.reset(self.tasks[pool[task_id]], task_id)
        episode_index = [0] * self.batch
        recent = [collections.deque(maxlen=self.length) for _ in range(self.batch)]
        failures: list[list[tuple[int, list]]] = [[] for _ in range(self.batch)]
        returns, successes, ended = 0.0, 0, 0
        clock["env_expert_s"] += time.perf_counter() - t0

        for t in range(t_size):
            t0 = time.perf_counter()
            for b, env in enumerate(self.envs):
                obs_buf[t, b] = env.obs
                label_buf[t, b] = env.expert_action()
                task_buf[t, b] = env.task_id
            t1 = time.perf_counter()
            with torch.no_grad():
                rows = torch.from_numpy(task_buf[t])
                logits = self.policy(torch.from_numpy(obs_buf[t]), episodes[rows], slot_mask[rows])
                actions = torch.distributions.Categorical(logits=logits).sample().tolist()
            t2 = time.perf_counter()
            for b, env in enumerate(self.envs):
                next_obs, reward, terminated, truncated, success = env.step(actions[b])
                recent[b].append((next_obs, actions[b], reward))
                returns += reward
                if terminated or truncated:
                    ended += 1
                    successes += success
                    if not success and episode_index[b] < self.max_episodes:
                        failures[b].append((env.task_id, list(recent[b])))
                    episode_index[b] += 1
                    recent[b].clear()
                    task_id = int(self.rng.integers(self.pool_size))  # "diff" reset
                    env.reset(self.tasks[pool[task_id]], task_id)
            t3 = time.perf_counter()
            clock["env_expert_s"] += (t1 - t0) + (t3 - t2)
            clock["act_forward_s"] += t2 - t1

        t0 = time.perf_counter()
        obs = torch.from_numpy(obs_buf.reshape(-1, w, w, c))
        rows = torch.from_numpy(task_buf.reshape(-1))
        labels = torch.from_numpy(label_buf.reshape(-1))
        episodes = self.policy.encode_bank(bank_obs, bank_action, bank_reward, step_mask)
        logits = self.policy(obs, episodes[rows], slot_mask[rows])
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.optimizer.step()
        clock["learn_s"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        for trial in failures:  # trial by trial, episode by episode: the oldest falls out when full
            for task_id, steps in trial:
                self.banks[pool[task_id]].append(steps)
        clock["bank_lists_s"] += time.perf_counter() - t0

        metrics = {
            "loss": loss.item(),
            "bank_fill": sum(len(bank) for bank in self.banks) / (len(self.banks) * self.capacity),
            "episodes_per_trial": ended / self.batch,
            "return_per_episode": returns / max(ended, 1),
            "success_rate": successes / max(ended, 1),
        }
        return clock, metrics


def time_reference(cfg: Any, tasks: list[Task], max_steps: int, updates: int, warmup: int) -> dict:
    ref = Reference(cfg, tasks, max_steps)
    for _ in range(warmup):
        ref.update()
    run_s, cpu_s, clocks = [], [], []
    for _ in range(updates):
        cpu0, t0 = time.process_time(), time.perf_counter()
        clock, metrics = ref.update()
        run_s.append(time.perf_counter() - t0)
        cpu_s.append(time.process_time() - cpu0)
        clocks.append(clock)
    total = sum(run_s)
    split = {}
    for part in (*Reference.PARTS, "act_bank_encode_s"):
        seconds = [c[part] for c in clocks]
        split[part] = {"median_s": statistics.median(seconds), "share": sum(seconds) / total}
    accounted = sum(sum(c[p] for p in Reference.PARTS) for c in clocks)
    split["other_s"] = {"median_s": None, "share": (total - accounted) / total}
    return {
        "run_s": run_s,
        "cpu_s": cpu_s,
        "median_s": statistics.median(run_s),
        "median_cpu_s": statistics.median(cpu_s),
        "split": split,
        "param_count": sum(p.numel() for p in ref.policy.parameters()),
        "last_metrics": metrics,
    }


# ================================================================================== ours (JAX)
def time_ours(parts: Any, updates: int, warmup: int) -> dict:
    import jax

    state = parts.algo.init(jax.random.PRNGKey(0))
    t0 = time.perf_counter()
    update = jax.jit(parts.algo.update).lower(state).compile()
    compile_s = time.perf_counter() - t0
    warmup_s = []
    for _ in range(max(warmup, 1)):  # the executable's first call is never timed
        t0 = time.perf_counter()
        state, metrics = jax.block_until_ready(update(state))
        warmup_s.append(time.perf_counter() - t0)
    run_s, cpu_s = [], []
    for _ in range(updates):
        cpu0, t0 = time.process_time(), time.perf_counter()
        state, metrics = jax.block_until_ready(update(state))  # the state is threaded through
        run_s.append(time.perf_counter() - t0)
        cpu_s.append(time.process_time() - cpu0)
    return {
        "compile_s": compile_s,
        "warmup_s": warmup_s,
        "run_s": run_s,
        "cpu_s": cpu_s,
        "median_s": statistics.median(run_s),
        "median_cpu_s": statistics.median(cpu_s),
        "param_count": int(sum(x.size for x in jax.tree.leaves(state.params))),
        "last_metrics": {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0},
    }


def tasks_as_python(task_set: Any) -> list[Task]:
    cells, colors = np.asarray(task_set.block_cells), np.asarray(task_set.block_colors)
    goals, starts = np.asarray(task_set.goal_index), np.asarray(task_set.agent_start)
    return [
        Task(tuple(map(int, cells[i])), tuple(map(int, colors[i])), int(goals[i]), int(starts[i]))
        for i in range(len(goals))
    ]


# ======================================================================================= main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="run config giving the sizes")
    parser.add_argument("--updates", type=int, default=5, help="timed updates of each side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates first (ours: after compile)")
    parser.add_argument(
        "--torch-threads",
        default="2,1",
        help="torch intra-op thread counts to time the reference at, comma-separated; the ratio "
        "uses the fastest (on a busy 2-core machine 2 threads can be many times slower than 1)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: B=4, T=10, 20 tasks, no JSON")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if torch is None:
        print(
            "torch_reference: PyTorch is not installed (pip install torch); nothing measured", file=sys.stderr
        )
        sys.exit(2)
    thread_counts = [int(x) for x in args.torch_threads.split(",")]
    out = args.out or (None if args.quick else str(_BENCH_DIR / "results" / "torch_reference.json"))

    from benchmarks import _common
    from jaxmeta import config
    from jaxmeta.algos import failure_replay

    load_start = _common.load_average()
    cfg = config.load(args.config, list(QUICK_OVERRIDES) if args.quick else [])
    parts = failure_replay.make_parts(cfg)
    max_steps = int(parts.setup.params.max_steps_in_episode)
    b_size, t_size = cfg.algo.trial.batch_size, cfg.algo.trial.num_steps

    ours = time_ours(parts, args.updates, args.warmup)
    tasks = tasks_as_python(parts.setup.train_tasks)
    by_threads = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        result = time_reference(cfg, tasks, max_steps, args.updates, args.warmup)
        result["torch_threads"] = {
            "num_threads": torch.get_num_threads(),
            "num_interop_threads": torch.get_num_interop_threads(),
        }
        by_threads[threads] = result
    # The headline compares against the fastest thread setting tried.
    ref = min(by_threads.values(), key=lambda r: r["median_s"])

    for side in (ours, *by_threads.values()):
        side["updates_per_s"] = 1.0 / side["median_s"]
        side["env_steps_per_s"] = b_size * t_size / side["median_s"]
    ratio = ours["updates_per_s"] / ref["updates_per_s"]
    print(
        f"ours (JAX, jit):      {ours['median_s'] * 1e3:8.1f} ms/update, "
        f"{ours['updates_per_s']:7.2f} updates/s, {ours['env_steps_per_s']:9.0f} env steps/s, "
        f"compile {ours['compile_s']:.1f} s, {ours['param_count']} params"
    )
    for threads, result in by_threads.items():
        print(
            f"reference (PyTorch):  {result['median_s'] * 1e3:8.1f} ms/update, "
            f"{result['updates_per_s']:7.2f} updates/s, {result['env_steps_per_s']:9.0f} env steps/s, "
            f"{result['param_count']} params, torch {torch.__version__}, {threads} thread(s)"
        )
        print("  time split: " + ", ".join(f"{k} {v['share']:.0%}" for k, v in result["split"].items()))
    print(
        f"ours / reference: {ratio:.1f}x updates per second "
        f"(reference at {ref['torch_threads']['num_threads']} torch thread(s), its fastest setting here)"
    )

    algo = cfg.algo
    report = {
        "benchmark": "torch_reference",
        "command": _common.command_line(__file__, argv if argv is not None else sys.argv[1:]),
        "what": (
            "one training update of failure_replay (Memory variant): B trials of T steps acted by the "
            "current policy (sampling, diff resets, expert labels), one Adam step of behaviour cloning "
            "over all B*T steps re-encoding the update's task pool's banks, failures appended to the banks"
        ),
        "notes": [
            "both sides draw tasks_per_update training tasks per update and encode their banks (all N "
            "slots, empty ones too) for acting and again with gradients for the loss; the reference does "
            "exactly that, eagerly (no torch.compile)",
            "the reference acts on the same fixed task set; its env, expert and network follow "
            "envs_jax.gridworld and jaxmeta.nets.failure_memory (same parameter count)",
            "reference split: env_expert_s = Python env steps, BFS labels, resets and recording; "
            "act_forward_s = the per-step batched no_grad forward and sampling, plus act_bank_encode_s "
            "(the banks encoded once per update for acting); learn_s = bank encode with gradients, "
            "forward/backward over B*T steps, clipping, Adam; bank_lists_s = deques to tensors and back",
        ],
        "sizes": {
            "config": str(Path(args.config).name),
            "quick": args.quick,
            "batch": b_size,
            "trial_steps": t_size,
            "num_train_tasks": algo.num_train_tasks,
            "tasks_per_update": algo.tasks_per_update,
            "bank_capacity": algo.bank_capacity,
            "bank_length": algo.bank_length,
            "features": algo.features,
            "num_heads": algo.num_heads,
            "hidden": algo.hidden,
            "conv_channels": list(algo.conv_channels),
            "encoder_layers": algo.encoder_layers,
            "max_episodes_per_trial": algo.max_episodes_per_trial,
            "env": {"size": cfg.env.size, "num_blocks": cfg.env.num_blocks, "num_colors": cfg.env.num_colors},
            "max_steps_in_episode": max_steps,
        },
        "updates": args.updates,
        "warmup": args.warmup,
        "ours": ours,
        "torch_version": torch.__version__,
        "reference": ref,
        "reference_by_torch_threads": {str(k): v for k, v in by_threads.items()},
        "ours_over_reference": ratio,
    }
    return _common.finish_report(report, load_start, out)


if __name__ == "__main__":
    main()
