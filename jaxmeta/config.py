"""Typed run configuration: schema, loading (YAML + ``key=value`` overrides), validation.

The schema is a tree of dataclasses. Every field carries its meaning and its
allowed range in ``metadata``; :func:`help_text` prints them all, and
:func:`load` turns any mistake into a :class:`ConfigError` whose message is one
line naming the key and what is allowed (with the closest key for a typo).
The ``algo`` section's schema depends on ``algo.name``: each method in
:mod:`jaxmeta.algos` declares its own ``Config`` dataclass.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A configuration mistake; its message is a single line for the user."""


def param(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: Sequence[Any] | None = None,
    min_exclusive: bool = False,
) -> Any:
    """A schema field with its meaning and allowed range."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "min_exclusive": min_exclusive}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class EnvConfig:
    id: str = param("Gridworld-v0", "environment id (envs_jax.registered())", choices=("Gridworld-v0",))
    size: int = param(7, "grid width W (cells per side)", min=2, max=64)
    num_blocks: int = param(2, "blocks X: one goal and X-1 traps", min=1)
    num_colors: int = param(6, "palette size C (>= num_blocks)", min=1)
    max_steps_in_episode: int | None = param(
        None, "episode time limit; null means the env default (2*W*W)", min=1
    )
    obs_mode: str = param(
        "multihot", "observation: multi-hot W x W x (1+C) or rgb", choices=("multihot", "rgb")
    )
    train_every_goal: bool = param(
        False,
        "training tasks come in groups of X with the same layout and each block as the goal once "
        "(the layout never tells the goal); held-out tasks are drawn independently",
    )


@dataclasses.dataclass
class TrialConfig:
    num_steps: int = param(80, "steps per training trial T (paper: NH=80, LH=300)", min=1)
    reset_mode: str = param(
        "diff",
        "after an episode ends: 'same' task again or a 'diff' task from the set",
        choices=("same", "diff"),
    )
    batch_size: int = param(64, "trials per update", min=1)


@dataclasses.dataclass
class EvalConfig:
    every: int = param(20, "evaluate every this many updates (a multiple of chunk_size)", min=1)
    episodes: int = param(5, "episodes per evaluation trial, same task throughout", min=1)
    num_tasks: int = param(256, "held-out test tasks, one evaluation trial each", min=1)
    greedy: bool = param(False, "act with the most likely action instead of sampling")


@dataclasses.dataclass
class RunConfig:
    name: str = param("run", "run name, used in the default run_dir")
    run_dir: str = param("runs/${name}", "output directory (config, metrics, checkpoints, plots)")
    seed: int = param(0, "first training seed; seeds are seed, seed+1, ...", min=0)
    seeds: int = param(1, "independent seeds trained at once (sharded over devices)", min=1)
    task_seed: int = param(12345, "seed of the fixed train/test task sets (shared by all seeds)", min=0)
    num_updates: int = param(200, "training updates (a multiple of chunk_size)", min=1)
    chunk_size: int = param(10, "updates per jitted call between host syncs", min=1)
    checkpoint_every: int = param(
        50, "save a checkpoint every this many updates (a multiple of chunk_size)", min=1
    )
    keep_checkpoints: int = param(2, "how many recent checkpoints to keep", min=1)
    resume: bool = param(True, "continue from the latest checkpoint in run_dir if there is one")
    progress: bool = param(True, "show a progress bar")
    plots: bool = param(True, "write plots/*.png at the end")
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig, metadata={"help": "environment"})
    trial: TrialConfig = dataclasses.field(default_factory=TrialConfig, metadata={"help": "training trials"})
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig, metadata={"help": "evaluation"})
    algo: Any = dataclasses.field(default=None, metadata={"help": "method; its keys depend on algo.name"})


# Keys that may change when a run is resumed (they do not change its results).
RESUMABLE_CHANGES = ("num_updates", "progress", "plots", "resume")


def _algo_registry() -> Mapping[str, Any]:
    from jaxmeta import algos

    return algos.REGISTRY


def load(path: str | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML file and ``key=value`` overrides into a validated :class:`RunConfig`."""
    base: dict[str, Any] = {} if path is None else _read_yaml(path, seen=())
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} must look like key=value (e.g. seeds=4)")
    try:
        # The schema defaults of name and run_dir join the merge so that the default
        # run_dir "runs/${name}" is resolved with the configured name.
        defaults = OmegaConf.create({"name": RunConfig.name, "run_dir": RunConfig.run_dir})
        merged = OmegaConf.merge(defaults, OmegaConf.create(base), OmegaConf.from_dotlist(list(overrides)))
        raw = OmegaConf.to_container(merged, resolve=True)
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        raise ConfigError(f"bad config: {_one_line(err)}") from None
    return from_dict(raw)


def _read_yaml(path: str, seen: tuple[str, ...]) -> dict[str, Any]:
    """One config file as a dict; a ``base: OTHER.yaml`` key (relative to the file)
    is read first and this file's keys are merged over it (ablations stay short)."""
    try:
        loaded = OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:  # a directory, no permission, not text
        raise ConfigError(f"cannot read config file {path}: {_one_line(err)}") from None
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        raise ConfigError(f"cannot parse {path}: {_one_line(err)}") from None
    raw = OmegaConf.to_container(loaded) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    parent = raw.pop("base", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"base in {path} must be a file name, got {parent!r}")
    parent_path = str(Path(path).parent / parent)
    if parent_path in seen:
        raise ConfigError(f"base files form a cycle: {' -> '.join((*seen, parent_path))}")
    merged = OmegaConf.merge(OmegaConf.create(_read_yaml(parent_path, (*seen, path))), OmegaConf.create(raw))
    return OmegaConf.to_container(merged)


def from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a plain nested dict against the schema."""
    raw = dict(raw)
    algo_raw = raw.pop("algo", None) or {}
    if not isinstance(algo_raw, dict):
        raise ConfigError("algo must be a mapping with at least a 'name' key")
    registry = _algo_registry()
    algo_name = algo_raw.get("name", "bc")
    if algo_name not in registry:
        raise ConfigError(
            f"algo.name: unknown method {algo_name!r}{_suggest(str(algo_name), registry)}; "
            f"allowed: {', '.join(sorted(registry))}"
        )
    cfg = _build(RunConfig, raw, prefix="", extra_sections={"algo"})
    cfg.algo = _build(registry[algo_name].Config, algo_raw, prefix="algo.")
    _check_cross_fields(cfg)
    check = getattr(registry[algo_name], "validate_config", None)
    if check is not None:
        check(cfg)
    return cfg


def _check_cross_fields(cfg: RunConfig) -> None:
    for key in ("num_updates", "checkpoint_every"):
        value = getattr(cfg, key)
        if value % cfg.chunk_size:
            raise ConfigError(f"{key} must be a multiple of chunk_size={cfg.chunk_size}, got {value}")
    if cfg.eval.every % cfg.chunk_size:
        raise ConfigError(
            f"eval.every must be a multiple of chunk_size={cfg.chunk_size}, got {cfg.eval.every}"
        )
    test_tasks = getattr(cfg.algo, "num_test_tasks", None)
    if test_tasks is not None and cfg.eval.num_tasks > test_tasks:
        raise ConfigError(
            f"eval.num_tasks must be <= algo.num_test_tasks={test_tasks}, got {cfg.eval.num_tasks}"
        )
    if cfg.env.num_colors < cfg.env.num_blocks:
        raise ConfigError(
            f"env.num_colors must be >= env.num_blocks={cfg.env.num_blocks}, got {cfg.env.num_colors}"
        )
    if cfg.env.num_blocks + 1 > cfg.env.size**2:
        raise ConfigError(
            f"env.num_blocks must be <= env.size**2 - 1 = {cfg.env.size**2 - 1}, got {cfg.env.num_blocks}"
        )


def _build(schema: type, raw: Mapping[str, Any], prefix: str, extra_sections: set[str] = frozenset()) -> Any:
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key in raw:
        if key not in fields:
            full = prefix + str(key)
            raise ConfigError(f"unknown key {full!r}{_suggest(full, all_keys(schema, prefix))}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name in extra_sections:
            continue
        full = prefix + name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            sub = raw.get(name, {})
            if not isinstance(sub, Mapping):
                raise ConfigError(f"{full} must be a mapping of keys, got {sub!r}")
            values[name] = _build(hint, sub, prefix=full + ".")
        elif name in raw:
            values[name] = _coerce(full, raw[name], hint, field.metadata)
    return schema(**values)


def _coerce(key: str, value: Any, hint: Any, meta: Mapping[str, Any]) -> Any:
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} must be {_describe(hint, meta)}, got null")
    origin = typing.get_origin(hint)
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list of {item_type.__name__}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_type, meta) for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be {_describe(hint, meta)}, got {value!r}")
    elif hint is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key} must be {_describe(hint, meta)}, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key} must be {_describe(hint, meta)}, got {value!r}")
        value = float(value)
    elif hint is str and not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")
    low, high = meta.get("min"), meta.get("max")
    too_low = low is not None and (value <= low if meta.get("min_exclusive") else value < low)
    if too_low or (high is not None and value > high):
        raise ConfigError(f"{key} must be {_describe(hint, meta)}, got {value!r}")
    return value


def _describe(hint: Any, meta: Mapping[str, Any]) -> str:
    kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))
    low, high = meta.get("min"), meta.get("max")
    if low is not None and high is not None:
        return f"{kind} in [{low}, {high}]"
    if low is not None:
        return f"{kind} {'>' if meta.get('min_exclusive') else '>='} {low}"
    if high is not None:
        return f"{kind} <= {high}"
    return kind


def all_keys(schema: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key of a schema (the algo section of every method included)."""
    keys: list[str] = []
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        if schema is RunConfig and field.name == "algo":
            for module in _algo_registry().values():
                keys += [k for k in all_keys(module.Config, "algo.") if k not in keys]
        elif dataclasses.is_dataclass(hints[field.name]):
            keys += all_keys(hints[field.name], prefix + field.name + ".")
        else:
            keys.append(prefix + field.name)
    return keys


def _suggest(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The resolved configuration as a plain nested dict (what config.yaml holds)."""
    return dataclasses.asdict(cfg)


def diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += diff(a, b, prefix + key + ".")
        elif a != b:
            out.append(prefix + key)
    return out


def help_text() -> str:
    """Every config key with its type, default and meaning (for ``--help``)."""
    lines = [
        "usage: python -m jaxmeta.train config=PATH [key=value ...]",
        "",
        "Trains, evaluates, checkpoints and plots one configuration; key=value overrides",
        "any key of the YAML file (dotted for sections, e.g. algo.learning_rate=1e-3).",
        "A config file may start from another one with base: OTHER.yaml (its keys override the base).",
        "A run_dir that holds checkpoints is resumed. Exit status 2 on a config error.",
        "",
    ]
    lines += _help_for(RunConfig, "")
    for name, module in sorted(_algo_registry().items()):
        lines += ["", f"algo section when algo.name={name}: {module.__doc__.strip().splitlines()[0]}"]
        lines += _help_for(module.Config, "algo.")
    return "\n".join(lines)


def _help_for(schema: type, prefix: str) -> list[str]:
    lines = []
    hints = typing.get_type_hints(schema)
    default = schema()
    for field in dataclasses.fields(schema):
        hint = hints[field.name]
        if schema is RunConfig and field.name == "algo":
            continue
        if dataclasses.is_dataclass(hint):
            lines += ["", f"[{prefix}{field.name}] {field.metadata.get('help', '')}"]
            lines += _help_for(hint, prefix + field.name + ".")
            continue
        meta = field.metadata
        type_name = _type_name(hint)
        allowed = ""
        if meta.get("choices"):
            allowed = " {" + ", ".join(map(str, meta["choices"])) + "}"
        elif meta.get("min") is not None or meta.get("max") is not None:
            allowed = " " + _describe(int, meta).split(" ", 2)[-1]
        value = getattr(default, field.name)
        shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else value
        column = f"  {prefix + field.name:<34} {type_name + allowed:<26} default {shown!s:<14}"
        lines.append(f"{column} {meta.get('help', '')}")
    return lines


def _type_name(hint: Any) -> str:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _type_name(args[0]) + "|null"
    if typing.get_origin(hint) is list:
        return f"list[{typing.get_args(hint)[0].__name__}]"
    return getattr(hint, "__name__", str(hint))


__all__ = [
    "ConfigError",
    "RunConfig",
    "all_keys",
    "diff",
    "from_dict",
    "help_text",
    "load",
    "param",
    "to_dict",
]
