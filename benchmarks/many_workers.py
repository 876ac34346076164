"""Many workers on one study: 50-100 worker processes against PostgreSQL, directly and through
pgbouncer, with workers killed (kill -9) at random while their trials run.

Each worker is lstm-sweep's own worker minus TensorFlow: ``open_storage`` (heartbeats, the
stale-trial retry, the pool settings of ``sweep/dbpool.py``), ``join_study`` (its sampler and
pruner) and ``run_trials`` (the exact-N slots, waiting, reaping dead workers' trials, surplus
trials), with a cheap objective plugged in: the real search space's ``suggest_params``, a few
"epochs" of sleep each reported to Optuna (the median pruner may stop it), one result attribute,
like the real objective's writes. A killed worker is replaced at once (a Kubernetes Job's
``restartPolicy: OnFailure``). Workers are forked from a server process that imported Optuna
once, so 2 cores can start 60 of them in seconds.

Checked at the end of every configuration, from the database:

* exactly N finished (complete or pruned) trials, none RUNNING or WAITING;
* every trial a kill interrupted was failed by a heartbeat check and its parameters were run again
  to the end (``lost`` counts those that were not, and any missing finished trial);
* no trial finished twice (``duplicated``: a retry finished more than once, or more than N).

Measured: storage calls per second (every call into the RDB storage, heartbeats included), p50 and
p99 latency of a call, PostgreSQL connections held for the database (``pg_stat_activity``, sampled
every 0.5 s), pgbouncer's client connections, and the CPU time PostgreSQL's backends spent per
1000 calls (from /proc; how far one server carries a study).

    python benchmarks/many_workers.py              # 60 workers, 300 trials, 10 kills, 3 modes (BENCHMARKS.md: the run quoted)
    python benchmarks/many_workers.py --quick      # 8 workers, 40 trials, 2 kills (iterating)
    python benchmarks/many_workers.py --modes transaction --workers 100

PostgreSQL comes from SWEEP_TEST_POSTGRES_URL (default: the local server, trust auth); each
configuration gets its own new database, dropped afterwards. pgbouncer (Debian package
``pgbouncer``) runs on a free loopback port with its config in a temporary folder. Writes
benchmarks/results/many_workers.json (``--quick``: many_workers_quick.json).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import multiprocessing
import os
import random
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import _common
import _pgbouncer

STUDY = "many-workers"
MODES = ("direct", "transaction", "session")
# Heartbeats 4x as often as the product's default (20 s / 60 s) so a killed trial is reaped in
# seconds; a real worker makes fewer heartbeat calls than this benchmark's.
HEARTBEAT_INTERVAL, GRACE_PERIOD = 5, 20
# A worker keeps 2 connections (trial loop, heartbeat thread). The local server is shared by other
# users (max_connections 100): direct runs use at most as many workers as leave this many free.
DIRECT_HEADROOM = 25
CONNECTIONS_PER_WORKER = 2
# Methods of the storage that only return a setting (no database round trip): not counted.
NOT_CALLS = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "get_failed_trial_callback"}
SESSION_POOL = {"SWEEP_DB_POOL_SIZE": "0"}  # session mode pins a server connection to every idle client connection


# -- the worker ------------------------------------------------------------------------------------
def cheap_objective(space: Any, *, seconds: float, epochs: int) -> Any:
    """lstm-sweep's search space and reporting, with sleep instead of training."""
    import optuna

    from objectives.search_space import suggest_params

    def objective(trial: Any) -> float:
        trial.set_user_attr("worker_pid", os.getpid())  # the real objective writes its MLflow run id here
        p = suggest_params(trial, space)
        score = 0.9 - 0.1 * abs(math.log10(p.learning_rate) + 2.5) - abs(p.units - 96) / 1000 - p.dropout / 10
        score += random.Random(trial.number).uniform(-0.02, 0.02)
        for epoch in range(epochs):
            time.sleep(seconds / epochs)
            trial.report(score * (epoch + 1) / epochs, epoch)
            if trial.should_prune():
                trial.set_user_attr("prune_reason", "median")
                raise optuna.TrialPruned()
        trial.set_user_attr("result", {"val_score": score, "epochs_run": epochs})
        return score

    return objective


def instrument(storage: Any, samples: list[tuple[str, float]]) -> None:
    """Time every call into ``storage`` (outermost calls only), appending ``(method, seconds)``."""
    from sweep.storage_timing import instrument as time_calls

    time_calls(storage, lambda name, seconds: None if name in NOT_CALLS else samples.append((name, seconds)))


def worker_main(url: str, n_trials: int, folder: str, seconds: float, epochs: int, env: dict[str, str]) -> None:
    """One worker: join the study and run lstm-sweep's trial loop until it holds ``n_trials``."""
    os.environ.update(env)
    from objectives.search_space import SearchSpace
    from sweep.loop import run_trials
    from sweep.storage import open_storage
    from sweep.study import join_study

    samples: list[tuple[str, float]] = []
    out = Path(folder) / f"calls-{os.getpid()}.txt"

    def flush(*_: Any) -> None:
        taken, samples[:] = samples[:], []
        with out.open("a") as fh:
            fh.writelines(f"{name} {sec:.6f}\n" for name, sec in taken)

    storage = open_storage(url)
    instrument(storage, samples)
    study = join_study(STUDY, storage)
    space = SearchSpace.from_dict(study.user_attrs["settings"]["search_space"])
    reaped: list[int] = []
    ran = run_trials(study, cheap_objective(space, seconds=seconds, epochs=epochs), n_trials=n_trials,
                     on_trial_end=flush, on_reap=reaped.extend, poll_seconds=0.5)
    flush()
    (Path(folder) / f"done-{os.getpid()}.json").write_text(json.dumps({"ran": ran, "reaped": reaped}))


# -- the coordinator -------------------------------------------------------------------------------
def create_study(url: str, n_trials: int) -> None:
    """The study, created the way `sweep run --create-only` does (identity, N, queued baseline)."""
    from objectives.search_space import baseline_params
    from sweep.config import SweepConfig
    from sweep.storage import open_storage
    from sweep.study import create_or_resume

    cfg = SweepConfig(study=STUDY, storage=url, n_trials=n_trials)
    storage = open_storage(url, heartbeat=False)
    identity = {"data_path": "-", "data_fingerprint": "many-workers-benchmark", "settings": cfg.identity()}
    create_or_resume(cfg, name=STUDY, storage=storage, identity=identity, first_trials=[baseline_params(cfg.space)])
    storage.engine.dispose()


def direct_worker_cap(base_url: str) -> int:
    """The most workers a direct run may start and leave ``DIRECT_HEADROOM`` connections free."""
    import psycopg
    from sqlalchemy.engine import make_url

    conninfo = make_url(base_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        limit = int(conn.execute("SHOW max_connections").fetchone()[0])
        used = int(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'").fetchone()[0])
    return max(1, (limit - used - DIRECT_HEADROOM) // CONNECTIONS_PER_WORKER)


def _cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


class Monitor(threading.Thread):
    """Samples connections, running trials and PostgreSQL's CPU every ``period`` seconds."""

    def __init__(self, direct_url: str, dbname: str, bouncer_url: str | None, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        import psycopg
        from sqlalchemy.engine import make_url

        conninfo = make_url(direct_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)
        self.dbname, self.bouncer_url, self.period = dbname, bouncer_url, period
        self.server_conns: list[int] = []
        self.client_conns: list[int] = []
        self.clients_waiting: list[int] = []
        self.backend_ticks: dict[int, int] = {}
        self.running: list[tuple[int, int]] = []  # (trial number, worker pid) of RUNNING trials, last sample
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def sample(self) -> None:
        pids = [r[0] for r in self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (self.dbname,))]
        for pid in pids:
            ticks = _cpu_ticks(pid)
            if ticks is not None:
                self.backend_ticks[pid] = max(ticks, self.backend_ticks.get(pid, 0))
        running = self.conn.execute(
            "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a USING (trial_id) "
            "WHERE t.state = 'RUNNING' AND a.key = 'worker_pid'").fetchall()
        clients = waiting = 0
        if self.bouncer_url:
            for pool in _pgbouncer.show(self.bouncer_url, "SHOW POOLS"):
                if pool["database"] == self.dbname:
                    clients += int(pool["cl_active"]) + int(pool["cl_waiting"])
                    waiting += int(pool["cl_waiting"])
        with self.lock:
            self.server_conns.append(len(pids))
            self.running = [(int(n), int(json.loads(v))) for n, v in running]
            if self.bouncer_url:
                self.client_conns.append(clients)
                self.clients_waiting.append(waiting)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a sample lost to a busy moment is not a result
                pass
            self.stop.wait(self.period)

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=5)
        self.conn.close()


def verify(trials: list[Any], n_trials: int, killed: dict[int, int]) -> dict[str, Any]:
    """What the study holds at the end, against what exactly-N and kill -9 promise.

    Args:
        trials: the study's frozen trials.
        killed: trial number -> pid of each worker killed while it ran that trial.
    """
    from optuna.trial import TrialState

    from sweep.records import SURPLUS

    states = collections.Counter(t.state for t in trials)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    by_number = {t.number: t for t in trials}
    # Each finished retry names its chain of failed predecessors.
    finished_retries = collections.Counter()
    for t in finished:
        for number in t.system_attrs.get("retry_history", []):
            finished_retries[number] += 1
    killed_lost = killed_reaped = killed_finished_first = 0
    for number in killed:
        t = by_number.get(number)
        if t is not None and t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            killed_finished_first += 1  # it ended between the look and the kill
            continue
        if t is not None and t.state == TrialState.FAIL:
            killed_reaped += 1
        if finished_retries[number] == 0:
            killed_lost += 1
    surplus = sum(1 for t in trials if t.user_attrs.get("fail_reason") == SURPLUS)
    reaped = sum(1 for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("fail_reason"))
    duplicated = max(0, len(finished) - n_trials) + sum(c - 1 for c in finished_retries.values() if c > 1)
    return {
        "finished": len(finished),
        "complete": states[TrialState.COMPLETE],
        "pruned": states[TrialState.PRUNED],
        "running": states[TrialState.RUNNING],
        "waiting": states[TrialState.WAITING],
        "failed_by_heartbeat": reaped,
        "surplus": surplus,
        "killed_mid_trial": len(killed),
        "killed_trials_reaped": killed_reaped,
        "killed_trials_finished_before_the_kill": killed_finished_first,
        "retries_finished": sum(1 for t in finished if t.system_attrs.get("retry_history")),
        "lost": max(0, n_trials - len(finished)) + killed_lost,
        "duplicated": duplicated,
        "exact": len(finished) == n_trials and states[TrialState.RUNNING] == 0 and states[TrialState.WAITING] == 0
        and killed_lost == 0 and duplicated == 0,
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def read_calls(folder: Path) -> list[tuple[str, float]]:
    calls = []
    for path in folder.glob("calls-*.txt"):
        for line in path.read_text().splitlines():
            name, sec = line.split()
            calls.append((name, float(sec)))
    return calls


@contextlib.contextmanager
def _target(direct_url: str, mode: str, bouncer_pool: int) -> Iterator[str | None]:
    if mode == "direct":
        yield None
    else:
        with _pgbouncer.pgbouncer(direct_url, mode=mode, pool_size=bouncer_pool) as url:
            yield url


def run_config(*, base_url: str, mode: str, workers: int, n_trials: int, kills: int, seconds: float, epochs: int,
               bouncer_pool: int = 20, timeout: float = 300.0, seed: int = 0, pool_env: dict[str, str] | None = None,
               quiet: bool = False) -> dict[str, Any]:
    """Run one configuration on a new database; return its checks and measurements."""
    import optuna
    from sqlalchemy.engine import make_url

    rng = random.Random(seed)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["optuna", "sqlalchemy", "psycopg", "sweep.study", "sweep.loop", "sweep.storage",
                                "objectives.search_space"])
    if pool_env is None:
        pool_env = SESSION_POOL if mode == "session" else {}
    asked = workers
    if mode == "direct":
        workers = min(workers, direct_worker_cap(base_url))
    env = {"SWEEP_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL), "SWEEP_GRACE_PERIOD": str(GRACE_PERIOD), **pool_env}
    with _common.postgres_database(base_url) as direct_url, _target(direct_url, mode, bouncer_pool) as bouncer_url, \
            _common.scratch("sweep-many-workers-") as folder:
        url = bouncer_url or direct_url
        dbname = make_url(direct_url).database
        create_study(url, n_trials)
        monitor = Monitor(direct_url, dbname, bouncer_url)
        monitor.start()
        procs: list[Any] = []

        def spawn() -> None:
            p = ctx.Process(target=worker_main, args=(url, n_trials, str(folder), seconds, epochs, env), daemon=True)
            p.start()
            procs.append(p)

        t0 = time.monotonic()
        for _ in range(workers):
            spawn()
        expected = n_trials * seconds / workers
        kill_at = sorted(rng.uniform(0.2, 0.75) * expected + 2.0 for _ in range(kills))
        killed: dict[int, int] = {}
        restarted: set[int] = set()  # pids of workers that failed on their own and were replaced
        timed_out = False
        try:
            while any(p.is_alive() for p in procs):
                now = time.monotonic() - t0
                for p in list(procs):
                    if p.exitcode not in (None, 0, -signal.SIGKILL) and p.pid not in restarted and len(restarted) < workers:
                        restarted.add(p.pid)
                        spawn()  # restartPolicy: OnFailure
                if kill_at and now >= kill_at[0]:
                    with monitor.lock:
                        candidates = [(n, pid) for n, pid in monitor.running
                                      if n not in killed and any(p.pid == pid and p.is_alive() for p in procs)]
                    if candidates:
                        number, pid = rng.choice(candidates)
                        os.kill(pid, signal.SIGKILL)
                        killed[number] = pid
                        kill_at.pop(0)
                        spawn()  # restartPolicy: OnFailure
                if now > timeout:
                    timed_out = True
                    break
                time.sleep(0.1)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                p.join(timeout=10)
            wall = time.monotonic() - t0
            monitor.close()
        pg_cpu_s = sum(monitor.backend_ticks.values()) / os.sysconf("SC_CLK_TCK")
        storage = optuna.storages.RDBStorage(direct_url, engine_kwargs={"connect_args": {"prepare_threshold": None}})
        trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
        storage.engine.dispose()
        checks = verify(trials, n_trials, killed)
        calls = read_calls(folder)
        exits = collections.Counter(p.exitcode for p in procs)
        done = [json.loads(path.read_text()) for path in folder.glob("done-*.json")]

    lat = sorted(sec for _, sec in calls)
    by_method: dict[str, list[float]] = collections.defaultdict(list)
    for name, sec in calls:
        by_method[name].append(sec)
    finished_trials = [t for t in trials if t.datetime_complete and t.state.name in ("COMPLETE", "PRUNED")]
    span = (max(t.datetime_complete for t in finished_trials) - min(t.datetime_start for t in trials if t.datetime_start)
            ).total_seconds() if finished_trials else float("nan")
    row = {
        "mode": mode, "workers": workers, "workers_asked": asked, "n_trials": n_trials, "kills_planned": kills, "kills": len(killed),
        "trial_seconds": seconds, "epochs": epochs, "pool_env": pool_env, "bouncer_pool_size": bouncer_pool if bouncer_url else None,
        "timed_out": timed_out, "wall_s": round(wall, 1), "span_s": round(span, 1),
        "trials_per_s": round(checks["finished"] / span, 2) if math.isfinite(span) and span > 0 else None,
        **checks,
        "worker_exit_codes": {str(k): v for k, v in exits.items()},
        "workers_started": len(procs), "workers_finished_cleanly": len(done), "workers_failed_and_restarted": len(restarted),
        "storage_calls": len(lat),
        "calls_per_s": round(len(lat) / span, 1) if math.isfinite(span) and span > 0 else None,
        "calls_per_finished_trial": round(len(lat) / max(1, checks["finished"]), 1),
        "p50_ms": round(1000 * _percentile(lat, 0.50), 2), "p99_ms": round(1000 * _percentile(lat, 0.99), 2),
        "max_ms": round(1000 * lat[-1], 1) if lat else None,
        "by_method": {name: {"calls": len(v), "p50_ms": round(1000 * statistics.median(v), 2),
                             "p99_ms": round(1000 * _percentile(sorted(v), 0.99), 2)}
                      for name, v in sorted(by_method.items(), key=lambda kv: -len(kv[1]))[:12]},
        "server_connections_max": max(monitor.server_conns, default=0),
        "server_connections_median": statistics.median(monitor.server_conns) if monitor.server_conns else 0,
        "client_connections_max": max(monitor.client_conns, default=None) if bouncer_url else None,
        "clients_waiting_max": max(monitor.clients_waiting, default=None) if bouncer_url else None,
        "postgres_backend_cpu_s": round(pg_cpu_s, 2),
        "postgres_cpu_ms_per_1000_calls": round(1000 * pg_cpu_s / max(1, len(lat)) * 1000, 1),
        "load_average_after": _common.load_average(),
    }
    if not quiet:
        print(f"{mode:<11} {workers} workers, {row['kills']} kills: finished {row['finished']}/{n_trials} "
              f"lost {row['lost']} dup {row['duplicated']} running {row['running']}  "
              f"{row['calls_per_s']} calls/s p50 {row['p50_ms']} ms p99 {row['p99_ms']} ms  "
              f"server conns max {row['server_connections_max']}", flush=True)
    return row


TABLE_COLUMNS = ["mode", "workers", "N", "kills", "finished", "lost", "dup", "RUNNING", "calls/s", "p50 ms",
                 "p99 ms", "PG conns max", "client conns max", "PG CPU ms/1k calls", "wall s"]


def table_row(r: dict[str, Any]) -> list[Any]:
    return [r["mode"], r["workers"], r["n_trials"], r["kills"], r["finished"], r["lost"], r["duplicated"], r["running"],
            r["calls_per_s"], r["p50_ms"], r["p99_ms"], r["server_connections_max"],
            "-" if r["client_connections_max"] is None else r["client_connections_max"],
            r["postgres_cpu_ms_per_1000_calls"], r["wall_s"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=60)
    parser.add_argument("--trials", type=int, default=300, help="the study's N")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--trial-seconds", type=float, default=2.0, help="each cheap trial's sleep")
    parser.add_argument("--epochs", type=int, default=4, help="reports per trial")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {', '.join(MODES)}")
    parser.add_argument("--bouncer-pool", type=int, default=20, help="pgbouncer's server connections")
    parser.add_argument("--timeout", type=float, default=480.0, help="seconds per configuration")
    parser.add_argument("--quick", action="store_true", help="8 workers, 40 trials, 2 kills")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.workers, args.trials, args.kills, args.timeout = 8, 40, 2, 120.0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; use {', '.join(MODES)}")
    if args.workers > 100 or args.trials > 5000 or args.kills >= args.trials:
        parser.error("bounded on purpose: --workers <= 100, --trials <= 5000, --kills < --trials")
    if any(m != "direct" for m in modes) and _pgbouncer.binary() is None:
        parser.error("pgbouncer is not installed (Debian: apt-get install -y pgbouncer), or pass --modes direct")
    base = os.environ.get("SWEEP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    rows = [run_config(base_url=base, mode=m, workers=args.workers, n_trials=args.trials, kills=args.kills,
                       seconds=args.trial_seconds, epochs=args.epochs, bouncer_pool=args.bouncer_pool,
                       timeout=args.timeout, seed=args.seed) for m in modes]
    _common.print_table("Many workers on one study (kill -9 at random; exactly N checked from the database)",
                        TABLE_COLUMNS, [table_row(r) for r in rows])
    name = "many_workers_quick" if args.quick else "many_workers"
    path = _common.write_result(name, {
        "command": " ".join(["python benchmarks/many_workers.py", *sys.argv[1:]]),
        "settings": {**vars(args), "heartbeat_interval_s": HEARTBEAT_INTERVAL, "grace_period_s": GRACE_PERIOD},
        "configs": rows,
    })
    print(f"wrote {path}")
    if not all(r["exact"] and not r["timed_out"] for r in rows):
        raise SystemExit("exactly-N check failed: see the table")


if __name__ == "__main__":
    main()
