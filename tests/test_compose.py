"""docker-compose.yml, Dockerfile and .dockerignore stay consistent with each other and with the CLI.

No Docker engine runs here (nor in CI), so these files are checked by parsing them: the services
agree on host names, ports, credentials, databases and volumes, and every `sweep` invocation they
contain (the worker command, the setup step in the file's header comment) uses a real command and
real options of the Typer app. The same topology (Postgres storage, an MLflow server, several
workers joining one study) is run with local processes in tests/test_scale.py.

Fast: no TensorFlow, no network, nothing started.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from sqlalchemy.engine import make_url

from sweep.cli import app

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
CLI = typer.main.get_command(app)

_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def expand(value: Any) -> str:
    """Compose interpolation with nothing set: `${VAR:-default}` -> default, `${VAR}` -> ''."""
    return _VAR.sub(lambda m: m.group(2) or "", str(value))


def argv(service: str, key: str = "command") -> list[str]:
    value = SERVICES[service][key]
    return [expand(a) for a in (shlex.split(value) if isinstance(value, str) else value)]


def env(service: str) -> dict[str, str]:
    raw = SERVICES[service]["environment"]
    pairs = raw.items() if isinstance(raw, dict) else (item.split("=", 1) for item in raw)
    return {k: expand(v) for k, v in pairs}


def option(args: list[str], name: str) -> str:
    """The value given to `name` in args (`--name value` or `--name=value`)."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} missing from {args}")


def mounts(service: str) -> dict[str, str]:
    """Container path -> source (a named volume or a ./path) of every short-syntax volume."""
    return {v.split(":")[1]: v.split(":")[0] for v in SERVICES[service].get("volumes", [])}


def header_comment() -> str:
    lines = []
    for line in COMPOSE_FILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return "\n".join(lines)


def setup_invocation() -> list[str]:
    """The `sweep ...` arguments of the `docker compose run ... sweep ...` line in the header comment."""
    found = [line for line in header_comment().splitlines() if line.startswith("docker compose run ")]
    assert len(found) == 1, f"expected one `docker compose run` line in the header comment, got {found}"
    tokens = shlex.split(found[0])[3:]
    service = next(i for i, t in enumerate(tokens) if not t.startswith("-"))
    assert tokens[service] == "sweep", tokens
    return tokens[service + 1:]


def cli_options(command: str) -> set[str]:
    assert command in CLI.commands, f"`sweep {command}` is not a command of sweep/cli.py ({sorted(CLI.commands)})"
    params = CLI.commands[command].params
    return {o for p in params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ())) if o.startswith("-")}


def assert_real_options(args: list[str], command: str) -> None:
    missing = {a.split("=", 1)[0] for a in args if a.startswith("-")} - cli_options(command)
    assert not missing, f"`sweep {command}` has no option {sorted(missing)}"


def envvars(command: str, opt: str) -> list[str]:
    param = next(p for p in CLI.commands[command].params if opt in getattr(p, "opts", ()))
    return [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())


def created_databases() -> set[str]:
    sql = (ROOT / "docker" / "postgres-init.sql").read_text()
    return set(re.findall(r'^\s*CREATE\s+DATABASE\s+"?(\w+)"?', sql, flags=re.IGNORECASE | re.MULTILINE))


def postgres_credentials() -> tuple[str, str, str]:
    e = env("postgres")
    return e["POSTGRES_USER"], e["POSTGRES_PASSWORD"], e["POSTGRES_DB"]


def test_services_and_volumes_are_declared() -> None:
    assert {"postgres", "mlflow", "sweep"} <= set(SERVICES)
    declared = set(COMPOSE.get("volumes") or {})
    for name in SERVICES:
        for target, source in mounts(name).items():
            if source.startswith((".", "/")):  # a bind mount: in the repo, or a folder the header tells you to fill
                assert (ROOT / source).exists() or source in header_comment(), f"{name}: {source} -> {target}"
            else:
                assert source in declared, f"{name} mounts volume {source!r}, not declared at top level"
    assert mounts("postgres")["/var/lib/postgresql/data"] in declared


def test_postgres_is_health_checked_and_creates_the_mlflow_database() -> None:
    user, _, db = postgres_credentials()
    check = SERVICES["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in check and check[check.index("-U") + 1] == user and check[check.index("-d") + 1] == db
    init = mounts("postgres")
    assert any(t.startswith("/docker-entrypoint-initdb.d/") and s == "./docker/postgres-init.sql" for t, s in init.items())
    assert "mlflow" in created_databases() and db not in created_databases()


def test_services_wait_for_healthy_dependencies() -> None:
    expected = {"mlflow": {"postgres"}, "sweep": {"postgres", "mlflow"}}
    for service, needs in expected.items():
        deps = SERVICES[service]["depends_on"]
        assert set(deps) == needs
        for dep in needs:
            assert deps[dep]["condition"] == "service_healthy"
            assert "healthcheck" in SERVICES[dep], f"{service} waits for {dep} to be healthy, but it has no healthcheck"


def test_mlflow_serves_artifacts_from_a_named_volume() -> None:
    args = argv("mlflow")
    assert argv("mlflow", "entrypoint") == ["mlflow"] and args[0] == "server"
    assert "--serve-artifacts" in args and "--no-serve-artifacts" not in args
    destination = option(args, "--artifacts-destination")
    assert mounts("mlflow").get(destination) in set(COMPOSE["volumes"]), f"{destination} is not a named volume"


def test_mlflow_backend_store_is_the_database_the_init_script_creates() -> None:
    url = make_url(option(argv("mlflow"), "--backend-store-uri"))
    user, password, _ = postgres_credentials()
    assert url.drivername == "postgresql+psycopg" and url.host == "postgres" and url.port in (None, 5432)
    assert (url.username, url.password) == (user, password)
    assert url.database in created_databases()


def test_mlflow_port_agrees_with_ports_healthcheck_and_tracking_uri() -> None:
    args = argv("mlflow")
    port = option(args, "--port")
    assert option(args, "--host") == "0.0.0.0"
    assert [str(p).split(":")[-1] for p in SERVICES["mlflow"]["ports"]] == [port]
    assert f"127.0.0.1:{port}/health" in " ".join(SERVICES["mlflow"]["healthcheck"]["test"])
    assert env("sweep")["MLFLOW_TRACKING_URI"] == f"http://mlflow:{port}"


def test_mlflow_accepts_the_host_header_of_workers_and_the_published_port() -> None:
    # MLflow >= 3.5 answers 403 to Host headers outside --allowed-hosts (default: localhost and
    # private IPs) everywhere but /health, so a wrong list passes the healthcheck and fails every worker.
    allowed = option(argv("mlflow"), "--allowed-hosts").split(",")
    published = str(SERVICES["mlflow"]["ports"][0]).split(":")[-2]
    for host in (env("sweep")["MLFLOW_TRACKING_URI"].removeprefix("http://"), f"localhost:{published}"):
        assert "*" in allowed or any(fnmatch.fnmatch(host, a) if "*" in a else host == a for a in allowed), host


def test_sweep_storage_is_the_postgres_service() -> None:
    url = make_url(env("sweep")["SWEEP_STORAGE"])
    assert url.drivername == "postgresql+psycopg" and url.host == "postgres" and url.port in (None, 5432)
    assert (url.username, url.password, url.database) == postgres_credentials()


def test_worker_command_is_a_real_cli_command() -> None:
    args = argv("sweep")
    assert args[0] == "worker"
    assert_real_options(args, args[0])
    assert args[1] == env("sweep")["SWEEP_STUDY"]
    data = option(args, "--data")
    assert any(data.startswith(target.rstrip("/") + "/") for target in mounts("sweep")), data


@pytest.mark.parametrize("command", ["worker", "run"])
def test_connection_settings_come_from_the_environment(command: str) -> None:
    assert {"--storage", "--tracking-uri"} <= cli_options(command)
    assert envvars(command, "--storage") == ["SWEEP_STORAGE"]
    assert envvars(command, "--tracking-uri") == ["MLFLOW_TRACKING_URI"]
    assert {"SWEEP_STORAGE", "MLFLOW_TRACKING_URI"} <= set(env("sweep"))


def test_setup_step_in_the_header_creates_the_workers_study() -> None:
    args = setup_invocation()
    assert args[0] == "run" and "--create-only" in args
    assert_real_options(args, "run")
    worker = argv("sweep")
    assert args[1] == option(worker, "--data"), "the setup step and the workers must use the same data file"
    assert option(args, "--study") == worker[1]
    assert "docker compose up --scale sweep=" in header_comment()


def test_dockerfile_installs_the_project_with_sweep_as_entrypoint() -> None:
    for service in ("mlflow", "sweep"):
        assert SERVICES[service]["build"] in (".", "./")
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0].startswith("FROM python:3.11")
    entrypoints = [line for line in instructions if line.startswith("ENTRYPOINT ")]
    assert [json.loads(line.removeprefix("ENTRYPOINT ")) for line in entrypoints] == [["sweep"]]
    assert any(re.search(r"\bpip install\b.*\s\.$", line) for line in instructions if line.startswith("RUN "))
    copied = {Path(src).as_posix() for line in instructions if line.startswith("COPY ") for src in line.split()[1:-1]}
    assert {"pyproject.toml", "README.md", "sweep", "objectives"} <= copied
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["sweep"] == "sweep.cli:main"
    deps = " ".join(project["dependencies"])
    assert "mlflow" in deps and "psycopg" in deps  # the mlflow service and both postgresql+psycopg URLs need them

    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()} - {""}
    assert {".venv", ".git", "mlruns", "*.npz", "*.db"} <= ignored
    assert not copied & ignored


def test_worker_count_is_configurable() -> None:
    sweep = SERVICES["sweep"]
    replicas = str(sweep["deploy"]["replicas"])
    assert "${SWEEP_WORKERS" in replicas and int(expand(replicas)) >= 1
    assert "container_name" not in sweep and "ports" not in sweep  # both would stop `--scale sweep=N`
    assert sweep["restart"] == "no"
