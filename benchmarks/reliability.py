"""Outages during a real sweep: does it lose, duplicate or strand a trial, and how fast does it recover?

The issue's scenario, through the real CLI (`sweep run`), with the Optuna storage on PostgreSQL
and the MLflow tracking store on PostgreSQL, each behind its own TCP proxy on loopback
(tests/faults.py) that closes every connection and refuses new ones while "cut":

* ``tracking store (PostgreSQL)``: MLflow is given the database directly (no tracking server);
  its link is cut for 15 s right after the first trial finished, then the Optuna storage's link
  for 20 s right after the third trial finished.
* ``mlflow server``: the same, with MLflow reached through an ``mlflow server`` process (its own
  backend on PostgreSQL): the server's HTTP port is behind the proxy.

Reported per scenario: exit code, tracebacks in the output, finished trials (target N), trials
lost (N minus finished), duplicated (finished beyond N, or two MLflow runs for one trial), left
RUNNING in Optuna or MLflow, trials missing from MLflow, and the time to recover from each
outage: from the link's restore to the sweep's line saying the store is back (MLflow: every
postponed trial logged; Optuna: the waiting storage call went through).

    .venv/bin/python benchmarks/reliability.py            # 5 trials x 3 epochs per scenario (~15 min)
    .venv/bin/python benchmarks/reliability.py --quick    # 4 trials x 2 epochs, shorter outages (smoke test)

PostgreSQL comes from SWEEP_TEST_POSTGRES_URL (default: the local server, database test); each
scenario gets new databases, dropped afterwards. Writes benchmarks/results/reliability.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - sets TensorFlow's environment and sys.path first
from _common import REPO, print_table, scratch, write_result
from _servers import mlflow_server, postgres_databases

sys.path.insert(0, str(REPO / "tests"))
from faults import TcpProxy

PG = os.environ.get("SWEEP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SWEEP = str(Path(sys.executable).parent / "sweep")


def via(url: str, proxy: TcpProxy) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def finished_count(storage: str, name: str) -> int:
    import optuna

    try:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - not created yet
        return 0
    return sum(1 for t in trials if t.state.name in ("COMPLETE", "PRUNED"))


def run_scenario(label: str, *, folder: Path, data: Path, n: int, epochs: int, optuna_db: str, tracking_direct: str,
                 tracking_via: str, optuna_proxy: TcpProxy, tracking_proxy: TcpProxy, tracking_cut: float,
                 storage_cut: float) -> dict[str, Any]:
    name = "reliability"
    cmd = [SWEEP, "run", str(data), "--study", name, "--n-trials", str(n), "--epochs", str(epochs), "--patience",
           str(epochs), "--threads", "1", "--storage", via(optuna_db, optuna_proxy), "--tracking-uri", tracking_via]
    env = {**os.environ, "SWEEP_RETRAIN_TOP": "0", "COLUMNS": "200", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("SWEEP_STORAGE", None)
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []
    stdout: list[str] = []
    readers = [threading.Thread(target=lambda: [lines.append((time.time(), line)) for line in proc.stderr], daemon=True),
               threading.Thread(target=lambda: stdout.extend(proc.stdout), daemon=True)]
    for r in readers:
        r.start()
    faults: list[dict[str, Any]] = []
    plan = [("MLflow tracking store", tracking_proxy, tracking_cut, 1), ("Optuna storage", optuna_proxy, storage_cut, 3)]
    for what, proxy, seconds, after in plan:
        while proc.poll() is None and finished_count(optuna_db, name) < after:
            time.sleep(0.2)
        if proc.poll() is not None:
            faults.append({"link": what, "injected": False, "why": "the sweep ended first"})
            continue
        cut_at = time.time()
        proxy.cut()
        time.sleep(seconds)
        proxy.restore()
        faults.append({"link": what, "injected": True, "after_finished_trials": after, "seconds": seconds,
                       "cut_at_s": round(cut_at - t0, 1), "restored_at": time.time()})
    code = proc.wait(timeout=1800)
    for r in readers:
        r.join(timeout=10)
    wall = time.time() - t0
    err = "".join(line for _, line in lines)
    out = "".join(stdout)
    for fault in faults:
        if not fault.get("injected"):
            continue
        word = "MLflow store is back" if fault["link"].startswith("MLflow") else "storage is back"
        back = [ts for ts, line in lines if word in line and ts >= fault["restored_at"] - fault["seconds"]]
        fault["recovered_s"] = round(max(0.0, back[0] - fault["restored_at"]), 1) if back else None
        fault.pop("restored_at")
    facts = count(optuna_db, tracking_direct, name, n)
    return {"scenario": label, "n_trials": n, "epochs": epochs, "exit_code": code, "wall_s": round(wall, 1),
            "tracebacks": err.count("Traceback") + out.count("Traceback"), "faults": faults, **facts,
            "stderr_tail": err[-1500:]}


def count(optuna_db: str, tracking: str, name: str, n: int) -> dict[str, Any]:
    import optuna
    from mlflow.tracking import MlflowClient

    try:
        trials = optuna.load_study(study_name=name, storage=optuna_db).get_trials()
    except KeyError:  # the sweep stopped before it made the study
        trials = []
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=5000) if exp else []
    trial_runs: dict[int, list] = {}
    for r in runs:
        if r.data.tags.get("sweep.role") == "trial":
            trial_runs.setdefault(int(r.data.tags["sweep.trial_number"]), []).append(r)
    in_mlflow = [t for t in finished if any(
        r.info.status != "RUNNING" and r.data.tags.get("sweep.trial_state") == t.state.name
        and "result/val_balanced_accuracy" in r.data.metrics for r in trial_runs.get(t.number, []))]
    return {
        "finished": len(finished),
        "failed": sum(1 for t in trials if t.state.name == "FAIL"),
        "lost": max(0, n - len(finished)),
        "duplicated": max(0, len(finished) - n) + sum(len(v) - 1 for v in trial_runs.values()),
        "running_optuna": sum(1 for t in trials if t.state.name in ("RUNNING", "WAITING")),
        "running_mlflow": sum(1 for r in runs if r.info.status == "RUNNING"),
        "finished_in_mlflow": len(in_mlflow),
        "missing_from_mlflow": len(finished) - len(in_mlflow),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 trials x 2 epochs, 6 s / 8 s outages (smoke test)")
    parser.add_argument("--only", choices=["tracking-store", "mlflow-server"], default=None)
    args = parser.parse_args()
    n, epochs = (4, 2) if args.quick else (5, 3)
    tracking_cut, storage_cut = (6.0, 8.0) if args.quick else (15.0, 20.0)
    from sqlalchemy.engine import make_url

    from sweep.synthetic import make_dataset, write_dataset

    pg = make_url(PG)
    results = []
    with scratch("sweep-reliability-") as folder:
        data = write_dataset(make_dataset("seed-signal", n_train=200, n_test=100, seed=0), folder / "data.npz")
        for label in ("tracking store (PostgreSQL)", "mlflow server (PostgreSQL backend)"):
            if args.only and not label.startswith(args.only.replace("-", " ")):
                continue
            work = folder / label.split()[0]
            work.mkdir()
            with postgres_databases(2, base=PG, prefix="sweep_rel") as (optuna_db, mlflow_db), \
                    TcpProxy(pg.host or "127.0.0.1", pg.port or 5432) as optuna_proxy:
                if label.startswith("tracking"):
                    with TcpProxy(pg.host or "127.0.0.1", pg.port or 5432) as tracking_proxy:
                        result = run_scenario(label, folder=work, data=data, n=n, epochs=epochs, optuna_db=optuna_db,
                                              tracking_direct=mlflow_db, tracking_via=via(mlflow_db, tracking_proxy),
                                              optuna_proxy=optuna_proxy, tracking_proxy=tracking_proxy,
                                              tracking_cut=tracking_cut, storage_cut=storage_cut)
                else:
                    with mlflow_server(mlflow_db, work) as server:
                        port = int(server.rsplit(":", 1)[1])
                        with TcpProxy("127.0.0.1", port) as tracking_proxy:
                            result = run_scenario(label, folder=work, data=data, n=n, epochs=epochs,
                                                  optuna_db=optuna_db, tracking_direct=server,
                                                  tracking_via=f"http://127.0.0.1:{tracking_proxy.port}",
                                                  optuna_proxy=optuna_proxy, tracking_proxy=tracking_proxy,
                                                  tracking_cut=tracking_cut, storage_cut=storage_cut)
            results.append(result)
            print(f"{label}: exit {result['exit_code']}, {result['finished']}/{n} finished, "
                  f"faults {result['faults']}", flush=True)
            if result["exit_code"] != 0:
                print(result["stderr_tail"], flush=True)

    if args.only:  # keep the other scenario's last result
        import json

        from _common import RESULTS

        previous = RESULTS / "reliability.json"
        if previous.exists():
            kept = [r for r in json.loads(previous.read_text()).get("results", [])
                    if not r["scenario"].startswith(args.only.replace("-", " "))]
            results = sorted(kept + results, key=lambda r: not r["scenario"].startswith("tracking"))
    rows = []
    for r in results:
        faults = "; ".join(f"{f['link']} {f['seconds']:.0f} s" if f.get("injected") else f"{f['link']}: not injected"
                           for f in r["faults"])
        recover = " / ".join("-" if f.get("recovered_s") is None else f"{f['recovered_s']:.1f}" for f in r["faults"])
        rows.append([r["scenario"], faults, r["exit_code"], r["tracebacks"], f"{r['finished']}/{r['n_trials']}",
                     r["lost"], r["duplicated"], r["running_optuna"] + r["running_mlflow"],
                     f"{r['finished_in_mlflow']}/{r['finished']}", recover, r["wall_s"]])
    print_table("Outages during a sweep (Optuna storage and MLflow on PostgreSQL, links cut by a TCP proxy)",
                ["scenario", "faults injected", "exit", "tracebacks", "finished", "lost", "duplicated",
                 "left RUNNING", "in MLflow", "recovered s (MLflow / Optuna)", "wall s"], rows)
    path = write_result("reliability", {
        "command": "benchmarks/reliability.py" + (" --quick" if args.quick else ""),
        "settings": {"n_trials": n, "epochs": epochs, "tracking_cut_s": tracking_cut, "storage_cut_s": storage_cut,
                     "data": "seed-signal, 200 train + 100 test sequences of 20 x 5"},
        "results": results,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
