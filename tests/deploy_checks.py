"""Checks shared by tests/test_compose.py and tests/test_k8s.py: do the commands and environment
variables that the deployment files give `sweep` and `mlflow server` exist?

`sweep`'s commands come from the Typer app; `mlflow server`'s options and the environment variables
it reads come from the installed MLflow (its click command and `mlflow.environment_variables`),
imported once, on first use (it takes seconds).
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

import typer.main

from sweep.cli import app

CLI = typer.main.get_command(app)


def _opts(params) -> set[str]:
    return {o for p in params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ())) if o.startswith("-")}


def cli_options(command: str) -> set[str]:
    assert command in CLI.commands, f"`sweep {command}` is not a command of sweep/cli.py ({sorted(CLI.commands)})"
    return _opts(CLI.commands[command].params)


def assert_real_options(args: list[str], command: str) -> None:
    missing = {a.split("=", 1)[0] for a in args if a.startswith("-")} - cli_options(command)
    assert not missing, f"`sweep {command}` has no option {sorted(missing)}"


def envvars(command: str, opt: str) -> list[str]:
    param = next(p for p in CLI.commands[command].params if opt in getattr(p, "opts", ()))
    return [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())


def option(args: list[str], name: str) -> str:
    """The value given to `name` in args (`--name value` or `--name=value`)."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} missing from {args}")


@functools.cache
def _mlflow_server() -> tuple[set[str], set[str], set[str]]:
    import mlflow.cli
    import mlflow.environment_variables

    params = mlflow.cli.cli.commands["server"].params
    option_env = {e for p in params for e in ([p.envvar] if isinstance(p.envvar, str) else (p.envvar or ()))}
    declared = {getattr(mlflow.environment_variables, n).name for n in dir(mlflow.environment_variables)
                if n.startswith("MLFLOW_") and hasattr(getattr(mlflow.environment_variables, n), "name")}
    return _opts(params), option_env | declared, {ep.name for ep in entry_points(group="mlflow.app")}


def assert_real_mlflow_server(args: list[str], env: dict[str, str]) -> None:
    """`mlflow server ARGS` names only real options and app names, and every MLFLOW_* variable in
    `env` is one that MLflow reads (an option's variable or one of mlflow.environment_variables)."""
    options, known_env, apps = _mlflow_server()
    assert args[0] == "server", args
    missing = {a.split("=", 1)[0] for a in args[1:] if a.startswith("-")} - options
    assert not missing, f"`mlflow server` has no option {sorted(missing)}"
    if "--app-name" in args:
        assert option(args, "--app-name") in apps, f"no MLflow app {option(args, '--app-name')!r} ({sorted(apps)})"
    unknown = {k for k in env if k.startswith("MLFLOW_")} - known_env
    assert not unknown, f"MLflow reads no environment variable {sorted(unknown)}"
