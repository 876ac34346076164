"""docker-compose.yml, Dockerfile and .dockerignore stay consistent with each other and with the CLI.

No Docker engine runs here (nor in CI), so these files are checked by parsing them: the services
agree on host names, ports, credentials, databases and volumes, and every `sweep` invocation they
contain (the worker command, the setup step in the file's header comment) uses a real command and
real options of the Typer app, and `mlflow server` only real options and variables. The stack is
safe on a shared host: MLflow behind its basic-auth app, published on loopback only, no password on
a command line, in a URL or as a default (compose refuses to start without one), non-root images.
The same topology (Postgres storage, pgbouncer, an MLflow server with basic auth, several workers
joining one study) is run with local processes in tests/test_scale.py.

Fast: no TensorFlow, no network, nothing started.
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_checks import (
    assert_real_mlflow_server,
    assert_real_options,
    cli_options,
    envvars,
    option,
)
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]

# The secrets a user must give (shell or .env): compose refuses to start without them.
SECRETS = {"POSTGRES_PASSWORD": "pg-Secret-1", "MLFLOW_ADMIN_PASSWORD": "mlflow-Secret-2",
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-Secret-3"}

_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def expand(value: Any) -> str:
    """Compose interpolation with only the required secrets set: `${VAR:-default}` -> default,
    `${SECRET:?message}` -> the secret's test value."""
    def one(m: re.Match) -> str:
        name, op, arg = m.groups()
        if name in SECRETS:
            return SECRETS[name]
        assert not (op and op.endswith("?")), f"${{{name}}} is required but not a known secret"
        return arg if op and op.endswith("-") else ""
    return _VAR.sub(one, str(value))


def argv(service: str, key: str = "command") -> list[str]:
    value = SERVICES[service][key]
    return [expand(a) for a in (shlex.split(value) if isinstance(value, str) else value)]


def env(service: str) -> dict[str, str]:
    raw = SERVICES[service].get("environment") or {}
    pairs = raw.items() if isinstance(raw, dict) else (item.split("=", 1) for item in raw)
    return {k: expand(v) for k, v in pairs}


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


def dockerfile(path: str = "Dockerfile") -> list[str]:
    lines = [line.strip() for line in (ROOT / path).read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def created_databases() -> set[str]:
    sql = (ROOT / "docker" / "postgres-init.sql").read_text()
    return set(re.findall(r'^\s*CREATE\s+DATABASE\s+"?(\w+)"?', sql, flags=re.IGNORECASE | re.MULTILINE))


def postgres_credentials() -> tuple[str, str, str]:
    e = env("postgres")
    return e["POSTGRES_USER"], e["POSTGRES_PASSWORD"], e["POSTGRES_DB"]


def pgbouncer_ini() -> configparser.ConfigParser:
    ini = configparser.ConfigParser(delimiters=("=",), comment_prefixes=(";", "#"), interpolation=None)
    ini.read_string((ROOT / "docker" / "pgbouncer.ini").read_text())
    return ini


def assert_postgres_login(url_text: str, service: str, *, host: str, port: int, database: str) -> None:
    """A PostgreSQL URL without a password; the password reaches libpq through PGPASSWORD."""
    url = make_url(url_text)
    user, password, _ = postgres_credentials()
    assert url.drivername == "postgresql+psycopg" and url.host == host and (url.port or 5432) == port, url_text
    assert url.username == user and url.database == database, url_text
    assert url.password is None, f"{service}: a password in the URL {url_text!r}; give it as PGPASSWORD"
    assert env(service).get("PGPASSWORD") == password, f"{service} connects to PostgreSQL without its password"


def test_services_and_volumes_are_declared() -> None:
    assert {"postgres", "pgbouncer", "mlflow", "sweep"} <= set(SERVICES)
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
    expected = {"pgbouncer": {"postgres"}, "mlflow": {"postgres"}, "sweep": {"pgbouncer", "mlflow"}}
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


def test_mlflow_server_names_only_real_options_and_variables() -> None:
    assert_real_mlflow_server(argv("mlflow"), env("mlflow"))


def test_mlflow_backend_store_is_the_database_the_init_script_creates() -> None:
    args, e = argv("mlflow"), env("mlflow")
    assert "--backend-store-uri" not in args, "the backend store URL goes in MLFLOW_BACKEND_STORE_URI, off the command line"
    assert_postgres_login(e["MLFLOW_BACKEND_STORE_URI"], "mlflow", host="postgres", port=5432, database="mlflow")
    assert "mlflow" in created_databases()


def test_mlflow_is_behind_basic_auth_with_credentials_from_the_environment() -> None:
    args, e = argv("mlflow"), env("mlflow")
    assert option(args, "--app-name") == "basic-auth"
    raw = SERVICES["mlflow"]["environment"]
    for var, secret in (("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_ADMIN_PASSWORD"),
                        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_FLASK_SERVER_SECRET_KEY")):
        assert raw[var].startswith(f"${{{secret}:?"), f"{var} must come from the required variable {secret}"
    assert e["MLFLOW_AUTH_ADMIN_USERNAME"]
    # The auth settings file is in the image, and its user store on a volume of the mlflow service.
    config_path = e["MLFLOW_AUTH_CONFIG_PATH"]
    assert f"COPY docker/mlflow-auth.ini {config_path}" in dockerfile()
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "docker" / "mlflow-auth.ini")
    assert "admin_password" not in ini["mlflow"], "no credential in a committed file"
    store = make_url(ini["mlflow"]["database_uri"])
    assert store.drivername == "sqlite" and store.database and store.database.startswith("/")
    assert mounts("mlflow").get(str(Path(store.database).parent)) in set(COMPOSE["volumes"]), store.database
    assert ini["mlflow"]["default_permission"] in {"READ", "NO_PERMISSIONS"}


def test_workers_log_in_to_mlflow_as_the_admin_user() -> None:
    worker, server = env("sweep"), env("mlflow")
    assert worker["MLFLOW_TRACKING_USERNAME"] == server["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert worker["MLFLOW_TRACKING_PASSWORD"] == server["MLFLOW_AUTH_ADMIN_PASSWORD"] == SECRETS["MLFLOW_ADMIN_PASSWORD"]


def test_mlflow_port_agrees_with_ports_healthcheck_and_tracking_uri() -> None:
    args = argv("mlflow")
    port = option(args, "--port")
    assert option(args, "--host") == "0.0.0.0"  # inside its container; the host side is loopback only
    assert [str(p).split(":")[-1] for p in SERVICES["mlflow"]["ports"]] == [port]
    assert f"127.0.0.1:{port}/health" in " ".join(SERVICES["mlflow"]["healthcheck"]["test"])
    assert env("sweep")["MLFLOW_TRACKING_URI"] == f"http://mlflow:{port}"


def test_only_mlflow_is_published_and_only_on_loopback() -> None:
    published = {name: s["ports"] for name, s in SERVICES.items() if s.get("ports")}
    assert set(published) == {"mlflow"}
    for port in published["mlflow"]:
        assert str(port).startswith("127.0.0.1:"), f"{port}: publish on 127.0.0.1 only (a shared host)"


def test_mlflow_accepts_the_host_header_of_workers_and_the_published_port() -> None:
    # MLflow >= 3.5 answers 403 to Host headers outside --allowed-hosts (default: localhost and
    # private IPs) everywhere but /health, so a wrong list passes the healthcheck and fails every worker.
    allowed = option(argv("mlflow"), "--allowed-hosts").split(",")
    published = str(SERVICES["mlflow"]["ports"][0]).split(":")[-2]
    for host in (env("sweep")["MLFLOW_TRACKING_URI"].removeprefix("http://"), f"localhost:{published}",
                 f"127.0.0.1:{published}"):
        assert "*" in allowed or any(fnmatch.fnmatch(host, a) if "*" in a else host == a for a in allowed), host


def test_no_secret_has_a_default_or_is_on_a_command_line() -> None:
    text = COMPOSE_FILE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"(\W*)", text)
        assert uses and all(u.startswith(":?") for u in uses), f"${{{name}}} must be required (`:?`), never defaulted"
    for name, service in SERVICES.items():
        for key in ("command", "entrypoint"):
            if key in service:
                line = " ".join(argv(name, key))
                assert not any(v in line for v in SECRETS.values()), f"{name}: a secret on its {key}"
        healthcheck = " ".join(map(str, service.get("healthcheck", {}).get("test", [])))
        assert not any(v in expand(healthcheck) for v in SECRETS.values()), f"{name}: a secret in its healthcheck"
    assert not any(v in " ".join(setup_invocation()) for v in SECRETS.values())


def test_sweep_storage_is_pgbouncer_in_front_of_the_postgres_service() -> None:
    port = int(pgbouncer_ini()["pgbouncer"]["listen_port"])
    assert_postgres_login(env("sweep")["SWEEP_STORAGE"], "sweep", host="pgbouncer", port=port,
                          database=postgres_credentials()[2])
    assert env("pgbouncer")["POSTGRES_USER"] == postgres_credentials()[0]
    assert env("pgbouncer")["POSTGRES_PASSWORD"] == postgres_credentials()[1]
    assert "ports" not in SERVICES["pgbouncer"]


def test_pgbouncer_pools_transactions_for_the_postgres_service() -> None:
    ini = pgbouncer_ini()
    target = dict(kv.split("=", 1) for kv in ini["databases"]["*"].split())
    assert target == {"host": "postgres", "port": "5432"}
    settings = ini["pgbouncer"]
    # Transaction pooling: workers keep idle connections open (docker/pgbouncer.ini says why it is safe).
    assert settings["pool_mode"] == "transaction"
    assert settings["auth_type"] == "scram-sha-256"
    assert int(settings["max_client_conn"]) >= 200 and int(settings["default_pool_size"]) <= int(settings["max_db_connections"])
    # The entrypoint writes the auth file where the settings look for it, and the image puts both in place.
    entry = (ROOT / "docker" / "pgbouncer-entrypoint.sh").read_text()
    auth_dir = re.search(r'dir="\$\{PGBOUNCER_AUTH_DIR:-([^}]+)\}"', entry).group(1)
    assert settings["auth_file"] == f"{auth_dir}/userlist.txt"
    config = re.search(r'PGBOUNCER_CONFIG:-([^}]+)\}', entry).group(1)
    build = SERVICES["pgbouncer"]["build"]
    instructions = dockerfile(build["dockerfile"])
    assert build["context"] in (".", "./")
    assert f"COPY docker/pgbouncer.ini {config}" in instructions
    assert "COPY docker/pgbouncer-entrypoint.sh /usr/local/bin/pgbouncer-entrypoint.sh" in instructions
    assert json.loads(next(i for i in instructions if i.startswith("ENTRYPOINT ")).removeprefix("ENTRYPOINT ")) == [
        "/usr/local/bin/pgbouncer-entrypoint.sh"]


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
    assert {"SWEEP_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
            "PGPASSWORD"} <= set(env("sweep"))


def test_setup_step_in_the_header_creates_the_workers_study() -> None:
    args = setup_invocation()
    assert args[0] == "run" and "--create-only" in args
    assert_real_options(args, "run")
    worker = argv("sweep")
    assert args[1] == option(worker, "--data"), "the setup step and the workers must use the same data file"
    assert option(args, "--study") == worker[1]
    # Straight to PostgreSQL (the same database the workers reach through pgbouncer).
    assert_postgres_login(option(args, "--storage"), "sweep", host="postgres", port=5432,
                          database=make_url(env("sweep")["SWEEP_STORAGE"]).database)
    assert "docker compose up --scale sweep=" in header_comment()


def test_dockerfile_installs_the_project_with_sweep_as_entrypoint() -> None:
    for service in ("mlflow", "sweep"):
        assert SERVICES[service]["build"] in (".", "./")
    instructions = dockerfile()
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
    assert {".venv", ".git", "mlruns", "*.npz", "*.db", ".env"} <= ignored
    assert not copied & ignored


@pytest.mark.parametrize("path", ["Dockerfile", "docker/pgbouncer.Dockerfile"])
def test_images_run_as_a_numeric_non_root_user(path: str) -> None:
    instructions = dockerfile(path)
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users, f"{path}: no USER, so it runs as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and (not gid or gid.isdigit()), users[-1]
    # Kubernetes' runAsNonRoot needs a numeric USER; the manifests run as the same user.
    assert re.search(rf"useradd\b.*--uid {uid}\b", " ".join(instructions)), f"{path}: uid {uid} is never created"


def test_mount_points_belong_to_the_image_user() -> None:
    # A new named volume takes the ownership of its mount point in the image: the non-root user can write.
    chowned = " ".join(line for line in dockerfile() if line.startswith("RUN ") and "chown" in line)
    for service in ("mlflow", "sweep"):
        for target, source in mounts(service).items():
            if source in set(COMPOSE["volumes"]):
                assert target in chowned.split(), f"{service}: {target} is not owned by the image's user"


def test_worker_count_is_configurable() -> None:
    sweep = SERVICES["sweep"]
    replicas = str(sweep["deploy"]["replicas"])
    assert "${SWEEP_WORKERS" in replicas and int(expand(replicas)) >= 1
    assert "container_name" not in sweep and "ports" not in sweep  # both would stop `--scale sweep=N`
    assert sweep["restart"] == "no"
