"""deploy/k8s/ (kustomize) stays valid Kubernetes, consistent with itself, with docker-compose.yml
and with the CLI.

No cluster runs here (nor in CI): every resource is validated against the Kubernetes API's JSON
schemas in strict mode (kubernetes-validate ships them, so this needs no network), and the files
are checked by parsing: every `sweep` and `mlflow server` command line names real commands and
options, Services, ports, volumes, ConfigMap keys and images resolve, every credential comes from a
Secret, workers reach PostgreSQL through pgbouncer with the same environment variables as compose.

Fast: no TensorFlow, no network, nothing started.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import test_compose as compose
import yaml
from deploy_checks import assert_real_mlflow_server, assert_real_options, option
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
# Versions the manifests must be valid for: an old supported release and the newest schema shipped.
VERSIONS = ["1.29.0", f"{kubernetes_validate.latest_version()}.0"]
OUR_IMAGES = {"lstm-sweep": "Dockerfile", "lstm-sweep-pgbouncer": "docker/pgbouncer.Dockerfile"}


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


KUSTOMIZATION = load(K8S / "kustomization.yaml")[0]
RESOURCES = [doc for name in KUSTOMIZATION["resources"] for doc in load(K8S / name)]
BY_NAME = {(doc["kind"], doc["metadata"]["name"]): doc for doc in RESOURCES}
SETTINGS = BY_NAME[("ConfigMap", "sweep-settings")]["data"]
WORKLOADS = [doc for doc in RESOURCES if doc["kind"] in ("Deployment", "StatefulSet", "Job")]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def all_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload in WORKLOADS:
        for container in containers(workload):
            yield workload, container


def env_names(container: dict[str, Any]) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


def env_values(container: dict[str, Any]) -> dict[str, str]:
    """Literal values and ConfigMap references resolved; Secret references as `secret:NAME/KEY`."""
    out = {}
    for e in container.get("env", []):
        if "value" in e:
            out[e["name"]] = e["value"]
        elif "configMapKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["configMapKeyRef"]
            out[e["name"]] = BY_NAME[("ConfigMap", ref["name"])]["data"][ref["key"]]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            out[e["name"]] = f"secret:{ref['name']}/{ref['key']}"
    return out


def expand(arg: str, container: dict[str, Any]) -> str:
    """Kubernetes' $(VAR) expansion in command/args, from the container's env."""
    values = env_values(container)
    return re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], arg)


def sweep_invocations(container: dict[str, Any]) -> list[list[str]]:
    """The `sweep ...` argument lists a container runs: its args (the image's entrypoint is `sweep`),
    or each `sweep ...` in a `sh -c` script."""
    if container["image"] != "lstm-sweep":
        return []
    command = container.get("command")
    if command is None:
        return [[expand(a, container) for a in container["args"]]]
    if command[:2] == ["sh", "-c"]:
        script = command[2]
        return [shlex.split(m)[1:] for m in re.findall(r"\bsweep\s+[^;&|>]+", script)]
    return []


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A strategic-merge patch as kustomize applies it: maps merge, lists of named items merge by name."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value) \
                and isinstance(out.get(key), list):
            items = {item["name"]: item for item in out[key]}
            for item in value:
                assert item["name"] in items, f"the patch names {key} {item['name']!r}, which does not exist"
                items[item["name"]] = merged(items[item["name"]], item)
            out[key] = list(items.values())
        else:
            out[key] = copy.deepcopy(value)
    return out


def gpu_workers() -> dict[str, Any]:
    overlay = load(K8S / "gpu" / "kustomization.yaml")[0]
    assert overlay["resources"] == ["../"]
    (patch_entry,) = overlay["patches"]
    (patch,) = load(K8S / "gpu" / patch_entry["path"])
    base = BY_NAME[(patch["kind"], patch["metadata"]["name"])]
    return merged(base, patch)


def test_kustomization_lists_every_manifest() -> None:
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(KUSTOMIZATION["resources"]) == files
    assert len(BY_NAME) == len(RESOURCES), "two resources of one kind share a name"
    assert not [doc for doc in RESOURCES if doc["kind"] == "Secret"], "Secrets are created by hand, never committed"


@pytest.mark.parametrize("version", VERSIONS)
def test_every_resource_is_valid_kubernetes(version: str) -> None:
    for doc in [*RESOURCES, gpu_workers()]:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {exc}") from None


def test_schema_validation_catches_a_typo() -> None:
    job = copy.deepcopy(BY_NAME[("Job", "sweep-workers")])
    job["spec"]["parallelism"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSIONS[0], strict=True)
    job = copy.deepcopy(BY_NAME[("Job", "sweep-workers")])
    pod_spec(job)["containers"][0]["resource"] = pod_spec(job)["containers"][0].pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSIONS[0], strict=True)


def test_every_sweep_command_and_option_exists() -> None:
    seen = set()
    for _, container in all_containers():
        for args in sweep_invocations(container):
            assert_real_options(args, args[0])
            seen.add(args[0])
    assert {"run", "worker", "status"} <= seen


def test_mlflow_server_names_only_real_options_and_variables() -> None:
    deployment = BY_NAME[("Deployment", "mlflow")]
    (container,) = pod_spec(deployment)["containers"]
    assert container["command"] == ["mlflow"]
    args = [expand(a, container) for a in container["args"]]
    assert_real_mlflow_server(args, env_values(container))
    assert option(args, "--app-name") == "basic-auth"
    assert "--backend-store-uri" not in args, "the backend store URL goes in MLFLOW_BACKEND_STORE_URI"
    allowed = option(args, "--allowed-hosts").split(",")
    service = BY_NAME[("Service", "mlflow")]
    assert f"mlflow:{service['spec']['ports'][0]['port']}" in allowed and "localhost:*" in allowed  # workers; port-forward


def test_dollar_references_resolve_and_configmap_keys_exist() -> None:
    for workload, container in all_containers():
        for arg in [*container.get("command", []), *container.get("args", [])]:
            for var in re.findall(r"\$\((\w+)\)", arg):
                assert var in env_names(container), f"{workload['metadata']['name']}/{container['name']}: $({var})"
        for e in container.get("env", []):
            ref = e.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                assert ref["key"] in BY_NAME[("ConfigMap", ref["name"])]["data"], ref


def secret_refs() -> set[tuple[str, str]]:
    return {(ref["name"], ref["key"]) for _, container in all_containers() for e in container.get("env", [])
            if (ref := e.get("valueFrom", {}).get("secretKeyRef"))}


def readme_commands() -> list[str]:
    """The shell commands of the README's Kubernetes section (continuation lines joined)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Kubernetes\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, "no commands in the README's Kubernetes section"
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.split("  #")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_credentials_come_only_from_secrets() -> None:
    for workload, container in all_containers():
        where = f"{workload['metadata']['name']}/{container['name']}"
        assert "envFrom" not in container, f"{where}: name each variable"
        for e in container.get("env", []):
            if re.search(r"PASSWORD|SECRET|TOKEN", e["name"]):
                assert e.get("valueFrom", {}).get("secretKeyRef"), f"{where}: {e['name']} must come from a Secret"
        for arg in [*container.get("command", []), *container.get("args", [])]:
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", expand(arg, container)), f"{where}: a password in {arg}"
    assert secret_refs() == {("sweep-postgres", "password"), ("sweep-mlflow", "username"), ("sweep-mlflow", "password"),
                    ("sweep-mlflow", "flask-secret-key")}
    for key, value in SETTINGS.items():
        if "://" in value and value.startswith("postgresql"):
            assert make_url(value).password is None, f"sweep-settings {key}: no password in a URL (PGPASSWORD)"
        assert "@" not in value or value.startswith("postgresql"), key


def test_postgres_clients_send_the_database_password_from_the_secret() -> None:
    for workload, container in all_containers():
        values = env_values(container)
        urls = [v for v in values.values() if v.startswith("postgresql")]
        for url in urls:
            assert make_url(url).username == "sweep"
            assert values.get("PGPASSWORD") == "secret:sweep-postgres/password", workload["metadata"]["name"]
    postgres = pod_spec(BY_NAME[("StatefulSet", "postgres")])["containers"][0]
    assert env_values(postgres)["POSTGRES_PASSWORD"] == "secret:sweep-postgres/password"
    assert env_values(postgres)["POSTGRES_USER"] == "sweep"


def test_same_wiring_as_compose() -> None:
    mlflow = pod_spec(BY_NAME[("Deployment", "mlflow")])["containers"][0]
    worker = pod_spec(BY_NAME[("Job", "sweep-workers")])["containers"][0]
    create = pod_spec(BY_NAME[("Job", "sweep-create-study")])["containers"][0]
    assert set(compose.env("mlflow")) == env_names(mlflow)
    assert set(compose.env("sweep")) <= env_names(worker)
    for name in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_CONFIG_PATH"):
        assert env_values(mlflow)[name] == compose.env("mlflow")[name], name
    for name in ("SWEEP_STORAGE", "MLFLOW_TRACKING_URI"):
        assert env_values(worker)[name] == compose.env("sweep")[name], name
    # The study is created straight on PostgreSQL, as the compose header's setup step does.
    assert env_values(create)["SWEEP_STORAGE"] == option(compose.setup_invocation(), "--storage")
    assert make_url(env_values(worker)["SWEEP_STORAGE"]).database == make_url(env_values(create)["SWEEP_STORAGE"]).database
    # The workers log in to MLflow as the admin the server creates.
    assert env_values(worker)["MLFLOW_TRACKING_USERNAME"] == env_values(mlflow)["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert env_values(worker)["MLFLOW_TRACKING_PASSWORD"] == env_values(mlflow)["MLFLOW_AUTH_ADMIN_PASSWORD"]


def test_hosts_in_urls_are_services_with_those_ports() -> None:
    ports = {name: {p["port"] for p in doc["spec"]["ports"]} for (kind, name), doc in BY_NAME.items() if kind == "Service"}
    for key, value in SETTINGS.items():
        if "://" in value:
            url = make_url(value) if value.startswith("postgresql") else None
            host, port = (url.host, url.port or 5432) if url else re.match(r"https?://([^:/]+):(\d+)", value).groups()
            assert host in ports and int(port) in ports[host], f"sweep-settings {key}: no Service {host}:{port}"
    compose_pgbouncer_port = int(compose.pgbouncer_ini()["pgbouncer"]["listen_port"])
    assert ports["pgbouncer"] == {compose_pgbouncer_port}
    assert dict(kv.split("=", 1) for kv in compose.pgbouncer_ini()["databases"]["*"].split()) == {
        "host": "postgres", "port": str(next(iter(ports["postgres"])))}


def test_services_select_pods_and_name_their_ports() -> None:
    for (kind, name), service in BY_NAME.items():
        if kind != "Service":
            continue
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", f"{name}: reachable only inside the cluster"
        selector = service["spec"]["selector"].items()
        targets = [w for w in WORKLOADS if selector <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, f"Service {name} selects {len(targets)} workloads"
        named = {p["name"]: p["containerPort"] for c in containers(targets[0]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in named, f"Service {name}: no container port {port['targetPort']!r}"
    for workload in WORKLOADS:
        if workload["kind"] != "Job":
            selector = workload["spec"]["selector"]["matchLabels"].items()
            assert selector <= workload["spec"]["template"]["metadata"]["labels"].items(), workload["metadata"]["name"]


def test_volumes_and_claims_resolve() -> None:
    claims = {name for kind, name in BY_NAME if kind == "PersistentVolumeClaim"}
    for workload in WORKLOADS:
        spec = pod_spec(workload)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for container in containers(workload):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in templates, (workload["metadata"]["name"], mount)
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, volume
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in BY_NAME, volume


def test_postgres_init_script_is_compose_s() -> None:
    init = BY_NAME[("ConfigMap", "postgres-init")]["data"]
    assert list(init.values()) == [(ROOT / "docker" / "postgres-init.sql").read_text()]
    mounts = {m["mountPath"]: m["name"] for m in pod_spec(BY_NAME[("StatefulSet", "postgres")])["containers"][0]["volumeMounts"]}
    assert mounts["/docker-entrypoint-initdb.d"] == "init"


def test_mlflow_keeps_artifacts_and_users_on_volumes() -> None:
    container = pod_spec(BY_NAME[("Deployment", "mlflow")])["containers"][0]
    args = container["args"]
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert option(args, "--artifacts-destination") in mounted
    config = compose.configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "docker" / "mlflow-auth.ini")
    store = make_url(config["mlflow"]["database_uri"]).database
    assert str(Path(store).parent) in mounted, "the basic-auth user store must outlive the pod"
    assert f"COPY docker/mlflow-auth.ini {env_values(container)['MLFLOW_AUTH_CONFIG_PATH']}" in compose.dockerfile()
    assert BY_NAME[("Deployment", "mlflow")]["spec"]["strategy"]["type"] == "Recreate"


def test_images_are_ours_or_pinned_and_run_as_their_image_user() -> None:
    listed = {i["name"] for i in KUSTOMIZATION["images"]}
    used = set()
    for workload, container in all_containers():
        image = container["image"]
        if image in OUR_IMAGES:
            used.add(image)
            user = [line.split()[1] for line in compose.dockerfile(OUR_IMAGES[image]) if line.startswith("USER ")][-1]
            security = pod_spec(workload)["securityContext"]
            assert security["runAsNonRoot"] is True and str(security["runAsUser"]) == user.split(":")[0], workload["metadata"]["name"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        else:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image
    assert used == listed == set(OUR_IMAGES)


def test_workers_job_is_a_restartable_work_queue() -> None:
    job = BY_NAME[("Job", "sweep-workers")]
    spec = job["spec"]
    assert spec["parallelism"] >= 2 and "completions" not in spec
    assert pod_spec(job)["restartPolicy"] == "OnFailure"
    (worker,) = pod_spec(job)["containers"]
    args = [expand(a, worker) for a in worker["args"]]
    assert args[:2] == ["worker", SETTINGS["SWEEP_STUDY"]]
    assert option(args, "--data") == f"/data/{SETTINGS['SWEEP_DATA']}"
    assert option(args, "--threads") == str(worker["resources"]["limits"]["cpu"])
    data_mount = next(m for m in worker["volumeMounts"] if m["mountPath"] == "/data")
    assert data_mount["readOnly"] is True
    # It waits for the study the other Job creates.
    (wait,) = pod_spec(job)["initContainers"]
    assert [args[:2] for args in sweep_invocations(wait)] == [["status", "$SWEEP_STUDY"]]
    assert "SWEEP_STORAGE" in env_names(wait) and "PGPASSWORD" in env_names(wait)


def test_create_study_job_creates_the_workers_study_once() -> None:
    job = BY_NAME[("Job", "sweep-create-study")]
    assert pod_spec(job)["restartPolicy"] == "OnFailure" and "parallelism" not in job["spec"]
    (create,) = pod_spec(job)["containers"]
    args = [expand(a, create) for a in create["args"]]
    assert args[0] == "run" and "--create-only" in args
    assert args[1] == f"/data/{SETTINGS['SWEEP_DATA']}" and option(args, "--study") == SETTINGS["SWEEP_STUDY"]
    assert int(option(args, "--n-trials")) >= 1


def test_every_container_has_requests_and_limits() -> None:
    for workload, container in all_containers():
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{workload['metadata']['name']}/{container['name']}"


def test_gpu_overlay_gives_each_worker_one_gpu() -> None:
    gpu_pod = pod_spec(gpu_workers())
    (worker,) = gpu_pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    cpu_worker = pod_spec(BY_NAME[("Job", "sweep-workers")])["containers"][0]
    assert worker["resources"]["limits"]["cpu"] == cpu_worker["resources"]["limits"]["cpu"]
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu_pod["tolerations"])


def test_readme_creates_the_secrets_and_runs_the_stack() -> None:
    commands = readme_commands()
    created = set()
    for line in commands:
        if line.startswith("kubectl create secret generic "):
            literals = re.findall(r'--from-literal=([\w-]+)=("[^"]*"|\S+)', line)
            created |= {(shlex.split(line)[4], key) for key, _ in literals}
            for key, value in literals:  # a fresh random value, never one written in the README
                assert key == "username" or value.startswith('"$(openssl rand'), line
    assert created == secret_refs(), "the README's `kubectl create secret` commands and the manifests disagree"
    assert "kubectl apply -k deploy/k8s" in commands
    port = BY_NAME[("Service", "mlflow")]["spec"]["ports"][0]["port"]
    assert any(line.startswith(f"kubectl port-forward svc/mlflow {port}:{port}") for line in commands)
    # The data step runs a real `sweep` command in the create-study Job's waiting container.
    (data_step,) = [shlex.split(line) for line in commands if line.startswith("kubectl exec job/")]
    job = BY_NAME[("Job", data_step[2].removeprefix("job/"))]
    assert data_step[3:5] == ["-c", "wait-for-data"] and "wait-for-data" in {c["name"] for c in containers(job)}
    script = data_step[data_step.index("-c", 5) + 1]
    make = shlex.split(re.search(r"sweep (make-data[^&;]*)", script).group(1))
    assert_real_options(make, "make-data")
    assert script.endswith(f"/data/{SETTINGS['SWEEP_DATA']}")


def test_network_policy_admits_exactly_the_stack_s_pods() -> None:
    policy = BY_NAME[("NetworkPolicy", "lstm-sweep-internal")]
    isolated = policy["spec"]["podSelector"]["matchLabels"].items()
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    admitted = peer["podSelector"]["matchLabels"].items()
    assert set(peer) == {"podSelector"}, "pods of this namespace only"
    for workload in WORKLOADS:
        labels = workload["spec"]["template"]["metadata"]["labels"].items()
        assert isolated <= labels and admitted <= labels, f"{workload['metadata']['name']}: outside the policy"
