"""Tests of the typed run configuration and the ``python -m jaxmeta.train`` command line.

Expected messages, types and values are written here by hand from the
documented behaviour (one-line ``ConfigError`` naming the key, the closest key
for a typo, exit status 2 without a traceback, nothing touched on disk); the
quickstart YAML is cross-read with plain ``yaml.safe_load``. Most checks call
:func:`jaxmeta.config.load` or :func:`jaxmeta.train.main` in-process; two
subprocess runs check the real command end to end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from helpers import subprocess_timeout

from jaxmeta import algos, train
from jaxmeta.config import ConfigError, all_keys, help_text, load, param

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
BC = ROOT / "configs" / "bc_x2.yaml"
# A method and an environment: a config must choose both (bc runs on Gridworld).
BASE = ["algo.name=bc", "env.id=Gridworld-v0"]


def config_error(path: str | None, overrides: list[str], base: list[str] = BASE) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, [*base, *overrides] if path is None else overrides)
    message = str(info.value)
    assert "\n" not in message, f"message is not one line: {message!r}"
    assert message.strip() == message and message
    return message


# ------------------------------------------------------------------ bad values
@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        # unknown keys, with the closest key suggested
        (["sedes=4"], ["'sedes'", "did you mean 'seeds'"]),
        (["algo.learnin_rate=0.1"], ["'algo.learnin_rate'", "did you mean 'algo.learning_rate'"]),
        (["env.sizee=5"], ["'env.sizee'", "did you mean 'env.size'"]),
        (["algo.trial.batchsize=5"], ["'algo.trial.batchsize'", "did you mean 'algo.trial.batch_size'"]),
        (["env.num_block=3"], ["'env.num_block'", "did you mean 'env.num_blocks'"]),
        # wrong types
        (["seeds=abc"], ["seeds", "integer", "'abc'"]),
        (["seeds=1.5"], ["seeds", "integer", "1.5"]),
        (["seeds=true"], ["seeds", "integer"]),
        (["progress=maybe"], ["progress", "true or false", "'maybe'"]),
        (["algo.learning_rate=abc"], ["algo.learning_rate", "number", "'abc'"]),
        (["algo.hidden_sizes=5"], ["algo.hidden_sizes", "list"]),
        (["name=3"], ["name", "string"]),
        # out of range
        (["seeds=0"], ["seeds", ">= 1", "got 0"]),
        (["seed=-1"], ["seed", ">= 0", "got -1"]),
        (["env.size=1"], ["env.size", "[2, 64]", "got 1"]),
        (["algo.learning_rate=-1"], ["algo.learning_rate", "> 0", "-1"]),
        (["algo.learning_rate=0"], ["algo.learning_rate", "> 0"]),
        (["algo.learning_rate=nan"], ["algo.learning_rate", "nan"]),
        (["algo.hidden_sizes=[64,0]"], ["algo.hidden_sizes[1]", ">= 1", "got 0"]),
        (["env.max_steps_in_episode=0"], ["env.max_steps_in_episode", ">= 1"]),
        # bad choices
        (["algo.trial.reset_mode=sometimes"], ["algo.trial.reset_mode", "same", "diff", "'sometimes'"]),
        (["env.obs_mode=pixels"], ["env.obs_mode", "multihot", "rgb", "'pixels'"]),
        # cross-field
        (["num_updates=15", "chunk_size=10"], ["num_updates", "multiple of chunk_size=10", "15"]),
        (["checkpoint_every=25", "chunk_size=10"], ["checkpoint_every", "multiple of chunk_size=10"]),
        (["eval_every=5", "chunk_size=10"], ["eval_every", "multiple of chunk_size=10"]),
        (["log_every=3", "chunk_size=10"], ["log_every", "divide chunk_size=10", "3"]),
        (["env.num_blocks=4", "env.num_colors=3"], ["env.num_colors", "num_blocks=4", "got num_colors=3"]),
        (["env.size=2", "env.num_blocks=4", "env.num_colors=6"], ["env.num_blocks", "3", "num_blocks=4"]),
        (["algo.eval.num_tasks=300", "algo.num_test_tasks=256"], ["algo.eval.num_tasks", "256", "300"]),
        # environments by id
        (["env.id=Gridwrld-v0"], ["env.id", "'Gridwrld-v0'", "did you mean 'Gridworld-v0'", "CartPole-v1"]),
        (["env.id=CartPole-v1", "env.gravity=abc"], ["env.gravity", "number", "'abc'"]),
        (["env.id=CartPole-v1", "env.size=5"], ["'env.size'"]),
        # a method on an environment it cannot use
        (["env.id=CartPole-v1"], ["bc", "CartPole-v1", "task"]),
        (["env.id=Pendulum-v1"], ["bc"]),
        # malformed overrides and sections
        (["seeds"], ["'seeds'", "key=value"]),
        (["=4"], ["'=4'", "key=value"]),
        (["env=3"], ["env", "mapping"]),
        (["algo=3"], ["algo", "mapping"]),
        (["env.size=[1"], ["bad config"]),
    ],
)
def test_bad_override_is_one_line_naming_the_key(overrides, needles):
    message = config_error(None, overrides)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_a_method_needs_an_env_and_a_config_needs_a_method():
    message = config_error(None, ["algo.name=bc"], base=[])
    assert "bc runs on an environment" in message and "env.id" in message and "Gridworld-v0" in message
    message = config_error(None, ["env.id=Gridworld-v0"], base=[])
    assert "algo.name" in message and "failure_replay" in message
    assert "algo.name" in config_error(None, ["algo.learning_rate=0.1", "env.id=Gridworld-v0"], base=[])
    assert "env.id is missing" in config_error(None, ["algo.name=bc", "env.size=5"], base=[])


def test_typo_far_from_every_key_gets_no_suggestion():
    message = config_error(None, ["zzzzqqq=1"])
    assert "'zzzzqqq'" in message and "did you mean" not in message


def test_unknown_algo_lists_the_allowed_methods():
    message = config_error(None, ["algo.name=foo"])
    assert "algo.name" in message and "'foo'" in message and "allowed" in message
    assert "bc" in message
    for name in algos.REGISTRY:
        assert name in message.split("allowed", 1)[1]


def test_file_errors(tmp_path):
    missing = tmp_path / "nope.yaml"
    message = config_error(str(missing), [])
    assert "not found" in message and str(missing) in message

    broken = tmp_path / "broken.yaml"
    broken.write_text("seeds: [1, 2\nenv:\n  size: 5\n")
    message = config_error(str(broken), [])
    assert message.startswith("cannot parse") and str(broken) in message

    duplicated = tmp_path / "dup.yaml"
    duplicated.write_text("seeds: 2\nseeds: 3\n")
    assert str(duplicated) in config_error(str(duplicated), [])

    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    assert "mapping" in config_error(str(listing), [])

    # a directory (e.g. ``config=`` pointing at a folder) is a config error, not a crash
    assert str(tmp_path) in config_error(str(tmp_path), [])

    # a file's own mistakes are reported like overrides'
    typo = tmp_path / "typo.yaml"
    typo.write_text("algo:\n  name: bc\nenv:\n  id: Gridworld-v0\n  num_bloks: 3\n")
    message = config_error(str(typo), [])
    assert "'env.num_bloks'" in message and "did you mean 'env.num_blocks'" in message


# ---------------------------------------------------------------- good values
def test_overrides_parse_with_the_right_types():
    cfg = load(
        None,
        [
            *BASE,
            "algo.learning_rate=1e-3",
            "algo.hidden_sizes=[64,32]",
            "env.max_steps_in_episode=null",
            "seeds=3",
            "progress=false",
            "algo.trial.reset_mode=same",
            "algo.max_grad_norm=2",
        ],
    )
    assert type(cfg.algo.learning_rate) is float and cfg.algo.learning_rate == 0.001
    assert cfg.algo.hidden_sizes == [64, 32] and all(type(h) is int for h in cfg.algo.hidden_sizes)
    assert cfg.env.max_steps_in_episode is None
    assert type(cfg.seeds) is int and cfg.seeds == 3
    assert cfg.progress is False
    assert cfg.algo.trial.reset_mode == "same"
    assert type(cfg.algo.max_grad_norm) is float and cfg.algo.max_grad_norm == 2.0
    assert load(None, [*BASE, "env.max_steps_in_episode=12"]).env.max_steps_in_episode == 12

    # an override beats the file
    assert load(str(QUICKSTART), ["seeds=5"]).seeds == 5


def test_quickstart_loads_with_every_value_of_the_file():
    cfg = load(str(QUICKSTART), [])
    raw = yaml.safe_load(QUICKSTART.read_text())

    def check(section, obj, prefix):
        for key, value in section.items():
            if isinstance(value, dict):
                check(value, getattr(obj, key), prefix + key + ".")
            else:
                assert getattr(obj, key) == value, prefix + key
                assert type(getattr(obj, key)) is type(value), prefix + key

    check(raw, cfg, "")
    assert cfg.name == "quickstart" and cfg.algo.name == "failure_replay"


def test_default_run_dir_follows_the_name():
    assert load(str(QUICKSTART), []).run_dir == "runs/quickstart"
    assert load(None, BASE).run_dir == "runs/run"
    assert load(None, [*BASE, "name=abc"]).run_dir == "runs/abc"
    assert load(None, [*BASE, "name=abc", "run_dir=/tmp/elsewhere"]).run_dir == "/tmp/elsewhere"


# ------------------------------------------------------------------------ CLI
def test_main_reports_config_errors_in_one_line(capsys, tmp_path):
    cases = [
        ([f"config={QUICKSTART}", "sedes=4"], "did you mean 'seeds'"),
        ([f"config={tmp_path / 'missing.yaml'}"], "not found"),
        ([*BASE, "algo.learnin_rate=0.1"], "did you mean 'algo.learning_rate'"),
        ([*BASE, "algo.trial.reset_mode=sometimes"], "algo.trial.reset_mode"),
        (["algo.name=bc"], "env.id"),
        (["seeds"], "key=value"),
    ]
    for argv, needle in cases:
        assert train.main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert out == ""
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("config error: ") and needle in lines[0], err
    assert train.main(["--verbose"]) == 2
    assert "--verbose" in capsys.readouterr().err


def _shown(value):
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _lines_for(out, key):
    return [line for line in out.splitlines() if line.split()[:1] == [key]]


def test_help_lists_every_key_with_its_default(capsys):
    assert train.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == help_text().strip()
    from jaxmeta.config import RunConfig

    defaults = RunConfig()
    for key in all_keys():
        section, _, name = key.rpartition(".")
        if key == "env.id":
            continue  # keyed section: the ids are listed instead
        if section.startswith("algo"):
            # Each method lists its own algo section: one line per method that has the key.
            path = name if section == "algo" else section.removeprefix("algo.") + "." + name
            values = []
            for _, module in sorted(algos.REGISTRY.items()):
                obj = module.Config()
                for part in path.split(".")[:-1]:
                    obj = getattr(obj, part, None)
                if obj is not None and hasattr(obj, name):
                    values.append(getattr(obj, name))
        else:
            values = [getattr(defaults, name)]
        matching = _lines_for(out, key)
        assert len(matching) == len(values), f"{key} listed {len(matching)} times"
        for value, line in zip(values, matching, strict=True):
            assert f"default {_shown(value)} " in line + " ", (key, line)
    # hand-written spot checks
    assert "default 1 " in _lines_for(out, "seeds")[0]
    assert "Gridworld-v0" in out and "CartPole-v1" in out and "Breakout-MinAtar" in out
    assert not _lines_for(out, "env.size")  # no environment chosen: its keys are not listed


def test_help_for_a_chosen_method_and_environment(capsys):
    assert train.main(["--help", "algo.name=bc", "env.id=Gridworld-v0"]) == 0
    out = capsys.readouterr().out
    assert "default 7 " in _lines_for(out, "env.size")[0]
    assert "default 3 " in _lines_for(out, "env.num_blocks")[0]  # the env's own default
    assert "default null " in _lines_for(out, "env.max_steps_in_episode")[0]
    assert _lines_for(out, "algo.hidden_sizes") and not _lines_for(out, "algo.bank_capacity")
    assert train.main(["--help", f"config={ROOT / 'configs' / 'memory_x2.yaml'}"]) == 0
    out = capsys.readouterr().out
    assert _lines_for(out, "algo.bank_capacity") and _lines_for(out, "env.train_every_goal")
    assert train.main(["--help", "env.id=CartPole-v1"]) == 0
    out = capsys.readouterr().out
    assert "default 9.8 " in _lines_for(out, "env.gravity")[0]
    assert "default 500 " in _lines_for(out, "env.max_steps_in_episode")[0]


def test_env_sections_are_typed_by_the_chosen_environment():
    cfg = load(None, ["algo.name=bc", "env.id=Gridworld-v0", "env.size=5", "env.num_colors=3"])
    assert (cfg.env.id, cfg.env.size, cfg.env.num_blocks, cfg.env.num_colors) == ("Gridworld-v0", 5, 3, 3)
    from jaxmeta.config import env_schema, from_dict

    schema = env_schema("CartPole-v1")
    section = schema(gravity=3)
    assert type(section.gravity) is int or section.gravity == 3  # the dataclass itself does not coerce
    raw = {"algo": {"name": "bc"}, "env": {"id": "CartPole-v1", "gravity": 3, "max_steps_in_episode": 200}}
    with pytest.raises(ConfigError, match="task"):  # bc needs tasks; the env section itself is valid
        from_dict(raw)
    built = config_module_build(schema, raw["env"])
    assert type(built.gravity) is float and built.gravity == 3.0 and built.max_steps_in_episode == 200


def config_module_build(schema, raw):
    from jaxmeta import config as config_module

    return config_module._build(schema, raw, prefix="env.")


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (
            hashlib.sha256(p.read_bytes()).digest() if p.is_file() else b"dir",
            p.stat().st_mtime_ns,
        )
        for p in sorted(directory.rglob("*"))
    }


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "jaxmeta.train", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=subprocess_timeout(),
    )


@pytest.fixture
def existing_run_dir(tmp_path):
    run_dir = tmp_path / "existing"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "notes.txt").write_text("precious results\n")
    (run_dir / "checkpoints" / "data.bin").write_bytes(bytes(range(256)))
    before = _snapshot(run_dir)
    dir_mtime = run_dir.stat().st_mtime_ns
    yield run_dir
    assert _snapshot(run_dir) == before
    assert run_dir.stat().st_mtime_ns == dir_mtime


def test_cli_bad_key_exits_2_without_traceback(existing_run_dir):
    proc = _cli(f"config={QUICKSTART}", f"run_dir={existing_run_dir}", "sedes=4")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error:"), proc.stderr
    assert "did you mean 'seeds'" in lines[0]
    assert proc.stdout == ""


def test_cli_valid_config_refuses_a_foreign_run_dir(existing_run_dir):
    # Valid by the schema, but run_dir holds something that is not a jaxmeta run:
    # the runner must refuse before writing anything.
    tiny = ["num_updates=10", "chunk_size=10", "checkpoint_every=10", "eval_every=10", "progress=false"]
    tiny += ["plots=false", "algo.trial.batch_size=2", "algo.trial.num_steps=5", "algo.hidden_sizes=[8]"]
    tiny += ["algo.num_train_tasks=4", "algo.num_test_tasks=4", "algo.eval.num_tasks=4", "env.size=4"]
    proc = _cli(f"config={BC}", f"run_dir={existing_run_dir}", *tiny)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error:"), proc.stderr
    assert str(existing_run_dir) in lines[0]


def test_schema_fields_all_have_help_text():
    # help_text() promises a meaning for every key
    from jaxmeta.config import RunConfig, env_schema

    def walk(schema):
        hints = typing.get_type_hints(schema)
        for field in dataclasses.fields(schema):
            assert field.metadata.get("help"), f"{schema.__name__}.{field.name} has no help"
            if dataclasses.is_dataclass(hints[field.name]):
                walked.append(field.name)
                walk(hints[field.name])

    walked = []
    walk(RunConfig)
    assert walked == []  # env and algo are keyed sections
    for module in algos.REGISTRY.values():
        walk(module.Config)
    assert {"trial", "eval"} <= set(walked)
    for env_id in ("Gridworld-v0", "CartPole-v1", "Breakout-MinAtar"):
        walk(env_schema(env_id))


def test_base_files_are_merged_under_the_file_and_cycles_are_refused(tmp_path):
    (tmp_path / "parent.yaml").write_text(
        "seeds: 3\nalgo:\n  name: bc\nenv:\n  id: Gridworld-v0\n  size: 5\n  num_blocks: 2\n"
    )
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nenv:\n  num_blocks: 3\n")
    cfg = load(str(tmp_path / "child.yaml"), ["env.size=6"])
    assert (cfg.seeds, cfg.env.size, cfg.env.num_blocks) == (3, 6, 3)
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: e.yaml\n")
    (tmp_path / "e.yaml").write_text("base: c.yaml\n")
    message = config_error(str(tmp_path / "c.yaml"), [])
    for name in ("c.yaml", "d.yaml", "e.yaml"):  # every file of the cycle is named
        assert name in message, message
    assert message.count("c.yaml") == 2  # ... and it closes on the file it started from


def test_env_registry_errors_are_one_line_values():
    import envs_jax

    for bad in (None, 3, "NoSuchEnv-v9", "cartpole-v1"):
        with pytest.raises(ValueError) as info:
            envs_jax.make(bad)
        message = str(info.value)
        assert "\n" not in message and "registered:" in message and "Gridworld-v0" in message
    with pytest.raises(ValueError, match="did you mean 'CartPole-v1'"):
        envs_jax.make("cartpole-v1")
    with pytest.raises(ValueError, match="did you mean 'num_blocks'"):
        envs_jax.make("Gridworld-v0", num_block=3)
    with pytest.raises(ValueError, match="max_torque must be a number"):
        envs_jax.make("Pendulum-v1", max_torque="big")
    _, params = envs_jax.make("Pendulum-v1", max_torque=1)  # an int for a float setting
    assert params.max_torque == 1.0 and type(params.max_torque) is float
    assert set(envs_jax.registered()) >= {
        "Gridworld-v0",
        "CartPole-v1",
        "Breakout-MinAtar",
        "NumpyChain-host-v0",
    }


def test_a_method_without_an_environment_refuses_an_env_section(monkeypatch):
    import types

    @dataclasses.dataclass
    class Config:
        name: str = param("envless", "a method with no environment (e.g. regression tasks)")

    module = types.SimpleNamespace(Config=Config, NEEDS_ENV=False, __doc__="test method")
    monkeypatch.setitem(algos.REGISTRY, "envless", module)
    cfg = load(None, ["algo.name=envless"])
    assert cfg.env is None
    message = config_error(None, ["algo.name=envless", "env.id=CartPole-v1"], base=[])
    assert "envless takes no environment" in message


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["algo.name=ppo", "env.id=CartPoel-v1"], "did you mean 'CartPole-v1'"),
        (["algo.name=ppo", "env.id=CartPole-v1", "env.gravty=3"], "did you mean 'env.gravity'"),
        (["algo.name=ppo"], "ppo runs on an environment: set env.id"),
        (["algo.name=dqn", "env.id=Pendulum-v1"], "discrete action space"),
        (["algo.name=failure_replay", "env.id=CartPole-v1"], "no task interface"),
    ],
)
def test_cli_bad_env_choices_exit_2_in_one_line_writing_nothing(argv, needle, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train.main([*argv, f"run_dir={run_dir}"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and needle in err, err
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("env_id", "blocked", "needle"),
    [
        ("Procgen-v0", "procgen", 'pip install -e ".[procgen]"'),
        ("MiniworldThreeBoxes-v0", "miniworld", 'pip install -e ".[miniworld]"'),
    ],
)
def test_cli_a_missing_extra_is_one_line_naming_its_install(
    env_id, blocked, needle, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, blocked, None)  # as if the extra were not installed
    run_dir = tmp_path / "run"
    assert train.main(["algo.name=failure_replay", f"env.id={env_id}", f"run_dir={run_dir}"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and needle in err, err
    assert not run_dir.exists()


def test_cli_a_machine_that_cannot_render_the_room_is_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("miniworld", reason='Miniworld is not installed: pip install -e ".[miniworld]"')
    from envs_jax.host import miniworld_room
    from envs_jax.registry import EnvUnavailableError

    def no_context(*args, **kwargs):  # what the room raises when EGL gives no context
        raise EnvUnavailableError("MiniworldThreeBoxes-v0 could not create a headless OpenGL (EGL) context")

    monkeypatch.setattr(miniworld_room, "_RENDERING_CHECKED", False)
    monkeypatch.setattr(miniworld_room, "RoomBatch", no_context)
    run_dir = tmp_path / "run"
    assert (
        train.main(["algo.name=failure_replay", "env.id=MiniworldThreeBoxes-v0", f"run_dir={run_dir}"]) == 2
    )
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "headless OpenGL (EGL)" in err, err
    assert not run_dir.exists()
