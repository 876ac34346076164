"""How long the `sweep` commands a user types most often take to answer, with no training involved.

The CLI keeps TensorFlow and MLflow out of its start-up path (tests/test_boundaries.py checks the
imports); this benchmark puts the resulting wall times on record instead of asserting them in the
tests, where a busy machine makes any fixed bound flaky. Each command runs ``--repeat`` times as a
fresh process (the console script, as a user runs it) in a scratch folder; the first run of each is
dropped (cold file cache), the table gives the median and the slowest of the rest.

* ``sweep --help``: the app and its options, nothing else.
* ``sweep studies`` / ``sweep status`` / ``sweep best``: Optuna and SQLAlchemy on an SQLite study of
  3 finished trials (made once, by a cheap objective, with the study attributes the CLI reads).
* ``sweep run`` refused by validation (a missing data file): the error path a typo takes.
* ``python -c "import tensorflow"`` for scale: what every command above avoids.

    .venv/bin/python benchmarks/startup.py             # 7 runs each
    .venv/bin/python benchmarks/startup.py --quick     # 3 runs each

Writes benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401 - quiet TensorFlow, the repository on sys.path
from _common import load_average, print_table, scratch, write_result

SWEEP = str(Path(sys.executable).parent / "sweep")


def _make_study(folder: Path) -> str:
    """An SQLite study of 3 complete trials with the attributes `status` and `best` read."""
    import optuna

    from objectives.records import TrialResult

    storage = f"sqlite:///{folder}/sweep.db"
    study = optuna.create_study(study_name="demo", storage=storage, direction="maximize")
    study.set_user_attr("n_trials", 3)
    for i in range(3):
        trial = study.ask()
        trial.suggest_int("units", 16, 128)
        trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        trial.set_user_attr("result", TrialResult(val_score=0.6 + i / 10, val_balanced_accuracy=0.6 + i / 10).to_attr())
        study.tell(trial, 0.6 + i / 10)
    return storage


def _time(cmd: list[str], *, cwd: Path, repeat: int) -> dict[str, float | int]:
    seconds = []
    code = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        code = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=120).returncode
        seconds.append(time.perf_counter() - t0)
    kept = seconds[1:] or seconds
    return {"median_s": round(statistics.median(kept), 3), "max_s": round(max(kept), 3), "runs": len(kept),
            "exit_code": code}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per command (the first is dropped)")
    parser.add_argument("--quick", action="store_true", help="3 runs per command")
    args = parser.parse_args()
    repeat = 3 if args.quick else max(2, args.repeat)
    load_start = load_average()
    rows, results = [], {}
    with scratch("sweep-startup-") as folder:
        storage = _make_study(folder)
        commands = {
            "sweep --help": [SWEEP, "--help"],
            "sweep studies": [SWEEP, "studies", "--storage", storage],
            "sweep status demo": [SWEEP, "status", "demo", "--storage", storage],
            "sweep best demo": [SWEEP, "best", "demo", "--storage", storage],
            "sweep run (missing data file)": [SWEEP, "run", "no-such-file.npz", "--storage", storage],
            "import tensorflow (for scale)": [sys.executable, "-c", "import tensorflow"],
        }
        for name, cmd in commands.items():
            results[name] = _time(cmd, cwd=folder, repeat=repeat)
            r = results[name]
            rows.append([name, f"{r['median_s']:.2f}", f"{r['max_s']:.2f}", str(r["runs"]), str(r["exit_code"])])
    print_table("start-up of the CLI (seconds, fresh process each run)", ["command", "median", "max", "runs", "exit"],
                rows)
    path = write_result("startup", {
        "command": "python benchmarks/startup.py" + (" --quick" if args.quick else f" --repeat {repeat}"),
        "load_average_start": load_start, "load_average_end": load_average(), "commands": results,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
