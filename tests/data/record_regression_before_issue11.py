"""Record each method's metrics on a fixed seed before the platform refactor (issue 11).

Tasks: drawn from PRNGKey(task_seed) split into (train, test) as the code did then;
training key PRNGKey(0); jitted init; 8 updates; then evaluate(state, PRNGKey(7)).
Run from a checkout of commit 92ceb45 (adjust the two paths below to that checkout).
"""
import json, sys
sys.path.insert(0, "/work/main/tests"); sys.path.insert(0, "/work/main")
import jax, numpy as np
from helpers import TINY_MEMORY_AGENT, tiny_config
from jaxmeta import algos

CASES = {
    "failure_replay": ("env.size=5", "env.num_colors=3", "algo.bank_capacity=4", "algo.bank_length=3", *TINY_MEMORY_AGENT),
    "failure_replay_temporal": ("env.size=5", "env.num_colors=3", "algo.bank_capacity=4", "algo.bank_length=3", "algo.temporal=true", *TINY_MEMORY_AGENT),
    "bc": ("env.size=5", "env.num_colors=3", "env.max_steps_in_episode=10", "trial.num_steps=16", "algo.hidden_sizes=[16]"),
    "snail": ("env.size=5", "env.num_colors=3", "env.max_steps_in_episode=10", "trial.num_steps=16", "algo.context=16", "algo.features=8", "algo.filters=8", "algo.key_size=8", "algo.value_size=8", "algo.hidden=16", "algo.conv_channels=[4]"),
    "ppo_finetune": ("env.size=5", "env.num_colors=3", "env.max_steps_in_episode=10", "trial.num_steps=16", "algo.features=16", "algo.hidden=16"),
}
out = {}
for case, extra in CASES.items():
    name = case.replace("_temporal", "")
    cfg = tiny_config(name, "/tmp/unused", 8, "env.train_every_goal=true", *extra)
    algo = algos.REGISTRY[name].make(cfg)
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    state, metrics = jax.jit(lambda s: jax.lax.scan(lambda c, _: algo.update(c), s, None, length=8))(state)
    ev = jax.jit(algo.evaluate)(state, jax.random.PRNGKey(7))
    out[case] = {
        "overrides": ["env.train_every_goal=true", *extra],
        "train": {k: np.asarray(v).tolist() for k, v in metrics.items()},
        "eval": {k: np.asarray(v).tolist() for k, v in ev.items()},
        "param_checksum": float(sum(np.abs(np.asarray(l, np.float64)).sum() for l in jax.tree.leaves(state.params))),
    }
    print(case, {k: np.asarray(v)[:3].round(4).tolist() for k, v in metrics.items()})
json.dump(out, open("/work/main/tests/data/regression_before_issue11.json", "w"), indent=1)
