"""Typed run configuration: schema, loading (YAML + ``key=value`` overrides), validation.

The schema is a tree of dataclasses. Every field carries its meaning and its
allowed range in ``metadata``; :func:`help_text` prints them, and :func:`load`
turns any mistake into a :class:`ConfigError` whose message is one line naming
the key and what is allowed (with the closest key for a typo).

Two sections are keyed by a name:

* ``algo`` by ``algo.name``: each method in :mod:`jaxmeta.algos` declares its
  own ``Config`` dataclass (including, for methods that run trials, its
  ``algo.trial`` and ``algo.eval`` sub-sections);
* ``env`` by ``env.id``: each registered environment (``envs_jax.registered()``)
  declares its settings, from which its section is built. A method that
  needs no environment (``NEEDS_ENV = False``) runs with no ``env`` section.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
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


def section(schema: type, help: str) -> Any:
    """A nested config section (a dataclass of its own keys)."""
    return dataclasses.field(default_factory=schema, metadata={"help": help})


@dataclasses.dataclass
class RunConfig:
    name: str = param("run", "run name, used in the default run_dir")
    run_dir: str = param("runs/${name}", "output directory (config, metrics, checkpoints, plots)")
    seed: int = param(0, "first training seed; seeds are seed, seed+1, ...", min=0)
    seeds: int = param(1, "independent seeds trained at once (sharded over devices)", min=1)
    task_seed: int = param(12345, "seed of the fixed train/test task sets (shared by all seeds)", min=0)
    num_updates: int = param(200, "training updates (a multiple of chunk_size)", min=1)
    chunk_size: int = param(10, "updates per jitted call between host syncs", min=1)
    eval_every: int = param(20, "evaluate every this many updates (a multiple of chunk_size)", min=1)
    log_every: int = param(
        1, "write training metrics every this many updates (a divisor of chunk_size)", min=1
    )
    checkpoint_every: int = param(
        50, "save a checkpoint every this many updates (a multiple of chunk_size)", min=1
    )
    keep_checkpoints: int = param(2, "how many recent checkpoints to keep", min=1)
    resume: bool = param(True, "continue from the latest checkpoint in run_dir if there is one")
    progress: bool = param(True, "show a progress bar")
    plots: bool = param(True, "write plots/*.png at the end")
    env: Any = dataclasses.field(
        default=None, metadata={"help": "environment; its keys depend on env.id (none for some methods)"}
    )
    algo: Any = dataclasses.field(default=None, metadata={"help": "method; its keys depend on algo.name"})


# Keys that may change when a run is resumed: what is recorded and how often, not what is trained
# (run_dir may be spelled differently, or the run moved or copied under a new name). num_updates
# extends a run; a schedule over num_updates then changes course.
RESUMABLE_CHANGES = (
    "num_updates",
    "progress",
    "plots",
    "resume",
    "run_dir",
    "name",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
)
_KEYED_SECTIONS = ("env", "algo")


def _algo_registry() -> Mapping[str, Any]:
    from jaxmeta import algos

    return algos.REGISTRY


def needs_env(module: Any) -> bool:
    """Whether a method module runs on an environment (``NEEDS_ENV``, default true)."""
    return bool(getattr(module, "NEEDS_ENV", True))


def load(path: str | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML file and ``key=value`` overrides into a validated :class:`RunConfig`."""
    return from_dict(load_raw(path, overrides))


def load_raw(path: str | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The merged, resolved but unvalidated config dict of a file and overrides."""
    base: dict[str, Any] = {} if path is None else _read_yaml(path, seen=())
    for item in overrides:
        if not isinstance(item, str) or "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} must look like key=value (e.g. seeds=4)")
    try:
        # The schema defaults of name and run_dir join the merge so that the default
        # run_dir "runs/${name}" is resolved with the configured name.
        defaults = OmegaConf.create({"name": RunConfig.name, "run_dir": RunConfig.run_dir})
        merged = OmegaConf.merge(defaults, OmegaConf.create(base), OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_container(merged, resolve=True)
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        raise ConfigError(f"bad config: {_one_line(err)}") from None


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
    raw = migrate_legacy(raw)
    parent = raw.pop("base", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"base in {path} must be a file name, got {parent!r}")
    parent_path = str(Path(path).parent / parent)
    chain = (*seen, path)
    resolved = [str(Path(p).resolve()) for p in chain]
    if str(Path(parent_path).resolve()) in resolved:
        start = resolved.index(str(Path(parent_path).resolve()))
        raise ConfigError(f"base files form a cycle: {' -> '.join((*chain[start:], parent_path))}")
    merged = OmegaConf.merge(OmegaConf.create(_read_yaml(parent_path, chain)), OmegaConf.create(raw))
    return OmegaConf.to_container(merged)


def migrate_legacy(raw: dict[str, Any]) -> dict[str, Any]:
    """A config dict written before environments and trials were keyed sections, in today's layout.

    Before, ``trial`` and ``eval`` were top-level sections of every run and
    ``env`` had no ``id`` (it could only be Gridworld): ``trial`` moves to
    ``algo.trial``, ``eval.every`` to ``eval_every``, the rest of ``eval`` to
    ``algo.eval``, and an ``env`` section without ``id`` gets ``Gridworld-v0``.
    A dict in today's layout is returned unchanged.
    """
    if "trial" not in raw and "eval" not in raw:
        return raw
    raw = dict(raw)
    algo = dict(raw.get("algo") or {})
    if "trial" in raw:
        algo["trial"] = raw.pop("trial")
    if "eval" in raw:
        evaluation = dict(raw.pop("eval") or {})
        if "every" in evaluation:
            raw["eval_every"] = evaluation.pop("every")
        if evaluation:
            algo["eval"] = evaluation
    raw["algo"] = algo
    if isinstance(raw.get("env"), dict) and "id" not in raw["env"]:
        raw["env"] = {"id": "Gridworld-v0", **raw["env"]}
    return raw


def from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a plain nested dict against the schema."""
    raw = dict(raw)
    algo_raw = raw.pop("algo", None)
    env_raw = raw.pop("env", None)
    registry = _algo_registry()
    methods = ", ".join(sorted(registry))
    if algo_raw is None:
        raise ConfigError(f"no method chosen: set algo.name (one of {methods})")
    if not isinstance(algo_raw, dict):
        raise ConfigError("algo must be a mapping with at least a 'name' key")
    if "name" not in algo_raw:
        raise ConfigError(f"algo.name is missing: choose a method (one of {methods})")
    algo_name = algo_raw["name"]
    if algo_name not in registry:
        raise ConfigError(
            f"algo.name: unknown method {algo_name!r}{_suggest(str(algo_name), registry)}; allowed: {methods}"
        )
    module = registry[algo_name]
    cfg = _build(RunConfig, raw, prefix="", extra_sections=set(_KEYED_SECTIONS))
    cfg.algo = _build(module.Config, algo_raw, prefix="algo.")
    cfg.env = _build_env(env_raw, algo_name, needs_env(module))
    _check_cross_fields(cfg)
    check = getattr(module, "validate_config", None)
    if check is not None:
        check(cfg)
    return cfg


def _build_env(env_raw: Any, algo_name: str, required: bool) -> Any:
    import envs_jax

    if env_raw is None:
        if required:
            registered = ", ".join(envs_jax.registered())
            raise ConfigError(f"{algo_name} runs on an environment: set env.id (registered: {registered})")
        return None
    if not required:
        raise ConfigError(f"{algo_name} takes no environment: remove the env section (got env={env_raw!r})")
    if not isinstance(env_raw, dict):
        raise ConfigError(f"env must be a mapping of keys, got {env_raw!r}")
    if "id" not in env_raw:
        raise ConfigError(f"env.id is missing (registered: {', '.join(envs_jax.registered())})")
    schema = env_schema(env_raw["id"])
    env_cfg = _build(schema, env_raw, prefix="env.")
    entry = envs_jax.entry(env_cfg.id)
    if entry.check is not None:
        values = {name: getattr(env_cfg, name) for name in entry.settings}
        try:
            entry.check(values)
        except ValueError as err:
            raise ConfigError(f"env.{_one_line(err)}") from None
    return env_cfg


@functools.cache
def env_schema(env_id: Any) -> type:
    """The ``env`` section's dataclass for ``env_id``: ``id`` then each of the environment's settings."""
    import envs_jax

    try:
        entry = envs_jax.entry(env_id)
    except ValueError as err:
        raise ConfigError(f"env.id: {_one_line(err)}") from None
    fields: list[tuple[str, Any, Any]] = [
        ("id", str, param(entry.id, "environment id (envs_jax.registered())", choices=(entry.id,)))
    ]
    for name, setting in entry.settings.items():
        kind = setting.kind
        hint = kind | None if setting.optional else kind
        fields.append(
            (
                name,
                hint,
                param(
                    setting.default, setting.help, min=setting.min, max=setting.max, choices=setting.choices
                ),
            )
        )
    schema = dataclasses.make_dataclass(f"EnvConfig[{entry.id}]", fields)
    schema.__doc__ = entry.description or entry.id
    return schema


def env_settings(env_cfg: Any) -> dict[str, dict[str, Any]]:
    """``{"constructor": {...}, "params": {...}, "tasks": {...}}`` of an ``env`` section (nulls dropped)."""
    import envs_jax

    entry = envs_jax.entry(env_cfg.id)
    return entry.split({name: getattr(env_cfg, name) for name in entry.settings})


def _check_cross_fields(cfg: RunConfig) -> None:
    for key in ("num_updates", "checkpoint_every", "eval_every"):
        value = getattr(cfg, key)
        if value % cfg.chunk_size:
            raise ConfigError(f"{key} must be a multiple of chunk_size={cfg.chunk_size}, got {value}")
    if cfg.chunk_size % cfg.log_every:
        raise ConfigError(f"log_every must divide chunk_size={cfg.chunk_size}, got {cfg.log_every}")


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
            if sub is None:
                sub = {}
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
        return f"{kind} in {'(' if meta.get('min_exclusive') else '['}{low}, {high}]"
    if low is not None:
        return f"{kind} {'>' if meta.get('min_exclusive') else '>='} {low}"
    if high is not None:
        return f"{kind} <= {high}"
    return kind


def all_keys(schema: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key of a schema (for the run schema: every method's ``algo`` keys and ``env.id``)."""
    keys: list[str] = []
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        if schema is RunConfig and field.name == "algo":
            for module in _algo_registry().values():
                keys += [k for k in all_keys(module.Config, "algo.") if k not in keys]
        elif schema is RunConfig and field.name == "env":
            keys.append("env.id")
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


def help_text(path: str | None = None, overrides: Sequence[str] = ()) -> str:
    """Every config key with its type, default and meaning (for ``--help``).

    With a config file or overrides that choose a method (``algo.name``) or
    an environment (``env.id``), only their sections are listed; otherwise
    every method's ``algo`` section and the list of environment ids.
    """
    import envs_jax

    try:
        raw = load_raw(path, overrides)
    except ConfigError:
        raw = {}
    algo_name = (raw.get("algo") or {}).get("name") if isinstance(raw.get("algo"), dict) else None
    env_id = (raw.get("env") or {}).get("id") if isinstance(raw.get("env"), dict) else None
    lines = [
        "usage: python -m jaxmeta.train config=PATH [key=value ...]",
        "",
        "Trains, evaluates, checkpoints and plots one configuration; key=value overrides",
        "any key of the YAML file (dotted for sections, e.g. algo.learning_rate=1e-3).",
        "A config file may start from another one with base: OTHER.yaml (its keys override the base).",
        "A run_dir that holds checkpoints is resumed. Exit status 2 on a config error.",
        "Add config=PATH or algo.name=NAME / env.id=ID to --help to see only those sections.",
        "",
    ]
    lines += _help_for(RunConfig, "")
    registry = _algo_registry()
    chosen = {algo_name: registry[algo_name]} if algo_name in registry else dict(sorted(registry.items()))
    for name, module in chosen.items():
        lines += ["", f"[algo] when algo.name={name}: {module.__doc__.strip().splitlines()[0]}"]
        lines += _help_for(module.Config, "algo.")
    if isinstance(env_id, str) and env_id in envs_jax.registered():
        schema = env_schema(env_id)
        lines += ["", f"[env] when env.id={env_id}: {schema.__doc__}"]
        lines += _help_for(schema, "env.")
    else:
        lines += ["", "[env] keyed by env.id; add env.id=ID to --help for its keys. Registered ids:"]
        lines += ["  " + ", ".join(envs_jax.registered())]
    return "\n".join(lines)


def _help_for(schema: type, prefix: str) -> list[str]:
    lines = []
    hints = typing.get_type_hints(schema)
    default = schema()
    for field in dataclasses.fields(schema):
        hint = hints[field.name]
        if schema is RunConfig and field.name in _KEYED_SECTIONS:
            continue
        if dataclasses.is_dataclass(hint):
            lines += [f"  [{prefix}{field.name}] {field.metadata.get('help', '')}"]
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
    "env_schema",
    "env_settings",
    "from_dict",
    "help_text",
    "load",
    "load_raw",
    "migrate_legacy",
    "needs_env",
    "param",
    "section",
    "to_dict",
]
