"""Bad input through the real `sweep` console script: exit 2, one 'error: ' line, nothing written.

Every case runs the installed script in its own empty working directory. The subprocesses are
independent, so a module fixture starts the selected ones together on a small thread pool and the
tests only inspect the outcomes (this keeps ~40 interpreter start-ups to a few seconds of wall time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

SWEEP = Path(sys.executable).parent / "sweep"
STORES = ("sweep.db", "mlflow.db", "mlruns")
PASSWORD = "hunter2"


def _env() -> dict[str, str]:
    """The user's environment minus anything that points at their stores."""
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SWEEP_STORAGE")}


def _sweep(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(SWEEP), *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _tiny_npz(path: Path, **overrides: np.ndarray) -> Path:
    """A valid tiny set: 40 sequences x 6 steps x 2 features, labels 30/10; override any array."""
    rng = np.random.default_rng(0)
    arrays = {"X_train": rng.normal(size=(40, 6, 2)).astype(np.float32), "y_train": np.array([0] * 30 + [1] * 10)}
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


def _existing_db(p: Path) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(study_name="known", storage=f"sqlite:///{p / 'existing.db'}")


def _with_config(text: str) -> Callable[[Path], None]:
    def setup(p: Path) -> None:
        _tiny_npz(p / "d.npz")
        (p / "c.toml").write_text(text)
    return setup


def _nothing(p: Path) -> None:
    return None


def _npz(**overrides: np.ndarray) -> Callable[[Path], None]:
    return lambda p: _tiny_npz(p / "d.npz", **overrides) and None


def _huge_header_npz(p: Path) -> None:
    """An .npz whose X_train header declares 10^6 x 10^4 x 100 float32 (3.6 TiB) over 64 bytes of data."""
    import io
    import zipfile

    from numpy.lib import format as npy

    header = io.BytesIO()
    npy.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**4, 100)})
    y = io.BytesIO()
    npy.write_array(y, np.array([0] * 30 + [1] * 10))
    with zipfile.ZipFile(p / "d.npz", "w") as archive:
        archive.writestr("X_train.npy", header.getvalue() + b"\0" * 64)
        archive.writestr("y_train.npy", y.getvalue())


X = np.random.default_rng(1).normal(size=(40, 6, 2)).astype(np.float32)
NAN_X = np.where(np.arange(40)[:, None, None] == 5, np.nan, X)


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]  # "{cwd}" is replaced by the case's working directory
    phrases: tuple[str, ...]
    setup: Callable[[Path], None] = _nothing


def C(args: str | list[str], *phrases: str, setup: Callable[[Path], None] = _nothing) -> Case:
    return Case(tuple(args.split() if isinstance(args, str) else args), phrases, setup)


# `run` errors are all found while validating: before TensorFlow, MLflow or any store is touched.
RUN_ERRORS = {
    "run-missing-data-file": C("run missing.npz", "missing.npz: no such file", "sweep make-data"),
    "run-data-is-a-directory": C("run data.npz", "data.npz: is a directory", setup=lambda p: (p / "data.npz").mkdir()),
    "run-unknown-format-txt": C("run d.txt", "d.txt: unknown format '.txt'", ".npz, .csv or .tsv",
                                setup=lambda p: (p / "d.txt").write_text("0,1,2\n") and None),
    "run-corrupt-npz": C("run d.npz", "d.npz: not a readable .npz",
                         setup=lambda p: (p / "d.npz").write_bytes(b"garbage" * 50) and None),
    "run-nan-in-X": C("run d.npz", "X_train has 12 NaN/inf values (first in sequence 5)", setup=_npz(X_train=NAN_X)),
    "run-X-y-length-mismatch": C("run d.npz", "X_train has 40 sequences but y_train has 39 labels",
                                 setup=_npz(y_train=np.array([0] * 30 + [1] * 9))),
    "run-wrong-rank": C("run d.npz", "X_train has shape (40, 6)", "expected 3 dimensions [n, timesteps, features]",
                        setup=_npz(X_train=X[:, :, 0])),
    "run-one-class-only": C("run d.npz", "y_train has one class only", setup=_npz(y_train=np.zeros(40, int))),
    "run-class-with-one-sequence": C("run d.npz", "class 1 has 1 training sequence",
                                     setup=_npz(y_train=np.array([0] * 39 + [1]))),
    "run-csv-ragged-rows": C("run d.csv", "row 2 has 2 values but row 1 has 3",
                             setup=lambda p: (p / "d.csv").write_text("0,1,2,3\n1,1,2\n") and None),
    "run-test-flag-with-npz": C("run d.npz --test t.csv", "--test is for .csv/.tsv data", setup=_npz()),
    "run-storage-not-a-url": C("run d.npz --storage notaurl", "is not a database URL", "sqlite:///sweep.db",
                               setup=_npz()),
    "run-storage-unsupported-db": C("run d.npz --storage oracle://u@h/db", "unsupported database 'oracle'",
                                    setup=_npz()),
    "run-config-unknown-key": C("run d.npz --config c.toml", "c.toml: search_space.width: unknown key",
                                setup=_with_config("[search_space]\nwidth = 3\n")),
    "run-config-low-above-high": C("run d.npz --config c.toml", "c.toml: search_space.units: low=128 > high=16; swap them",
                                   setup=_with_config("[search_space]\nunits = { low = 128, high = 16 }\n")),
    "run-config-invalid-toml": C("run d.npz --config c.toml", "c.toml: not valid TOML", setup=_with_config("[run\n")),
    "run-config-missing": C("run d.npz --config nope.toml", "nope.toml: config file not found", setup=_npz()),
    "run-n-trials-0": C("run d.npz --n-trials 0", "n_trials (--n-trials) must be an integer >= 1, got 0", setup=_npz()),
    "run-n-trials-minus-3": C(["run", "d.npz", "--n-trials", "-3"], "n_trials (--n-trials) must be an integer >= 1, got -3",
                              setup=_npz()),
    "run-n-trials-not-a-number": C("run d.npz --n-trials many", "Invalid value for '--n-trials'", "sweep run --help",
                                   setup=_npz()),
    "run-val-fraction-0.9": C("run d.npz --val-fraction 0.9", "--val-fraction", "got 0.9", setup=_npz()),
    "run-log-models-unknown": C("run d.npz --log-models some", "log_models (--log-models) must be one of best, all, none",
                                setup=_npz()),
    "run-ship-unknown": C("run d.npz --ship best", "ship (--ship) must be one of auto, ensemble, refit, trial", setup=_npz()),
    "run-ship-refit-no-retraining": C("run d.npz --ship refit --retrain-top 0", "--retrain-top 0 turns the re-training off",
                                      setup=_npz()),
    "run-storage-password-bad-port": C(["run", "d.npz", "--storage", f"postgresql+psycopg://bob:{PASSWORD}@127.0.0.1:x/db"],
                                       "not a database URL", setup=_npz()),
    "run-npz-header-declares-3-TiB": C("run d.npz", "array 'X_train' declares shape (1000000, 10000, 100)",
                                       "file is corrupt or truncated", setup=_huge_header_npz),
    "run-seed-above-2-32": C("run d.npz --seed 4294967296", "seed (--seed) must be an integer in [0, 2147483647]",
                             setup=_npz()),
    "run-config-tracking-uri-number": C("run d.npz --config c.toml", "c.toml: run.tracking_uri (--tracking-uri) must be",
                                        "got 5", setup=_with_config("[run]\ntracking_uri = 5\n")),
    # The tracking store is checked before the Optuna storage is opened: no sweep.db is left behind.
    "run-tracking-server-unreachable": C("run d.npz --tracking-uri http://127.0.0.1:1",
                                         "cannot reach the MLflow tracking server http://127.0.0.1:1", setup=_npz()),
    "run-tracking-server-password-unreachable": C(["run", "d.npz", "--tracking-uri", f"http://bob:{PASSWORD}@127.0.0.1:1"],
                                                  "cannot reach the MLflow tracking server", setup=_npz()),
    "run-tracking-postgres-password-unreachable": C(
        ["run", "d.npz", "--tracking-uri", f"postgresql+psycopg://bob:{PASSWORD}@127.0.0.1:1/db"],
        "cannot open MLflow store postgresql+psycopg://bob:***@127.0.0.1:1/db", setup=_npz()),
    "run-tracking-folder-missing": C("run d.npz --tracking-uri sqlite:///no/such/dir/m.db", "MLflow store sqlite:///",
                                     "no/such/dir does not exist", setup=_npz()),
    "run-storage-query-password-bad-port": C(
        ["run", "d.npz", "--storage", f"postgresql+psycopg://bob@127.0.0.1:x/db?password={PASSWORD}"],
        "not a database URL", "password=***", setup=_npz()),
    "run-storage-password-unsupported-db": C(["run", "d.npz", "--storage", f"oracle://bob:{PASSWORD}@host/db"],
                                             "unsupported database", "bob:***@host", setup=_npz()),
}

OTHER_ERRORS = {
    # Found only after TensorFlow is imported (see test_missing_sqlite_folder_is_checked_while_preparing).
    "run-storage-folder-missing": C("run d.npz --storage sqlite:///no/such/dir/x.db",
                                    "storage sqlite:///no/such/dir/x.db: folder no/such/dir does not exist", setup=_npz()),
    "status-without-database": C("status nosuchstudy", "no studies yet: sqlite:///sweep.db does not exist", "sweep run"),
    "best-without-database": C("best nosuchstudy", "no studies yet"),
    "predict-without-database": C("predict nosuchstudy d.npz", "no studies yet", setup=_npz()),
    "predict-out-not-csv": C("predict known d.npz --out p.json --storage sqlite:///{cwd}/existing.db",
                             "--out p.json: predictions are written as .csv", setup=_existing_db),
    "predict-no-mlflow-store": C("predict known d.npz --storage sqlite:///{cwd}/existing.db",
                                 "no MLflow store at sqlite:///mlflow.db", "--tracking-uri",
                                 setup=lambda p: (_existing_db(p), _tiny_npz(p / "d.npz")) and None),
    "predict-missing-data": C("predict known nope.npz --storage sqlite:///{cwd}/existing.db", "nope.npz: no such file",
                              setup=_existing_db),
    "diagnose-nothing": C("diagnose", "nothing to diagnose", "sweep diagnose --study NAME"),
    "diagnose-data-and-study": C("diagnose d.npz --study known", "not both", setup=_npz()),
    "diagnose-study-without-database": C("diagnose --study nosuchstudy", "no studies yet"),
    "diagnose-unknown-study": C("diagnose --study nosuchstudy --storage sqlite:///{cwd}/existing.db",
                                "no study named 'nosuchstudy'", setup=_existing_db),
    "studies-without-database": C("studies", "no studies yet"),
    "export-without-database": C("export nosuchstudy --out t.csv", "no studies yet"),
    "best-unknown-study": C("best nosuchstudy --storage sqlite:///{cwd}/existing.db", "no study named 'nosuchstudy'",
                            "known studies: known", "--study/--storage", setup=_existing_db),
    "status-unknown-study": C("status nosuchstudy --storage sqlite:///{cwd}/existing.db", "no study named 'nosuchstudy'",
                              "known studies: known", setup=_existing_db),
    "export-unknown-study": C("export nosuchstudy --out t.json --storage sqlite:///{cwd}/existing.db",
                              "no study named 'nosuchstudy'", setup=_existing_db),
    "best-without-completed-trials": C("best known --storage sqlite:///{cwd}/existing.db",
                                       "study 'known' has no completed trial yet", setup=_existing_db),
    "export-txt": C("export x --out file.txt", "--out file.txt: unknown format '.txt'", "use .csv or .json"),
    "export-no-suffix": C("export x --out file", "unknown format '(none)'"),
    "export-missing-folder": C("export x --out nodir/file.csv", "folder nodir does not exist"),
    "make-data-unknown-kind": C("make-data seed-magic --out x.npz", "unknown kind 'seed-magic'"),
    "make-data-seed-above-2-32": C("make-data seed-noise --out x.npz --seed 4294967296",
                                   "--seed must be an integer in [0, 2147483647]"),
    "diagnose-seed-above-2-32": C("diagnose d.npz --seed 4294967296", "--seed must be an integer in [0, 2147483647]",
                                  setup=_npz()),
    "make-data-n-10-to-the-12": C("make-data seed-noise --out x.npz --n 1000000000000", "--n must be in [20, 1000000]"),
    "make-data-not-npz": C("make-data seed-noise --out x.csv", "x.csv: the output must end in .npz"),
    "unknown-command": C("frobnicate", "No such command", "--help"),
    "status-query-password-unreachable": C(
        ["status", "x", "--storage", f"postgresql+psycopg://bob@127.0.0.1:1/db?password={PASSWORD}"],
        "cannot open storage postgresql+psycopg://bob@127.0.0.1:1/db?password=***"),
    "status-password-unreachable": C(["status", "x", "--storage", f"postgresql://bob:{PASSWORD}@127.0.0.1:1/db"],
                                     "cannot open storage postgresql+psycopg://bob:***@127.0.0.1:1/db"),
    "studies-password-unreachable": C(["studies", "--storage", f"postgresql+psycopg://bob:{PASSWORD}@127.0.0.1:1/db"],
                                      "cannot open storage", "bob:***@"),
}

ALL = {**RUN_ERRORS, **OTHER_ERRORS}

# Run through the real console script, one process each (the others run in one interpreter, below).
SCRIPT_CASES = [
    "run-storage-folder-missing",  # slow (imports TensorFlow first): started first to overlap the rest
    "run-missing-data-file", "run-unknown-format-txt", "run-nan-in-X", "run-X-y-length-mismatch", "run-wrong-rank",
    "run-one-class-only", "run-class-with-one-sequence", "run-storage-not-a-url", "run-config-unknown-key",
    "run-config-low-above-high", "run-n-trials-0", "run-n-trials-minus-3", "status-without-database",
    "best-unknown-study", "export-txt", "run-npz-header-declares-3-TiB", "run-seed-above-2-32",
]
# Imports TensorFlow before failing: too slow to repeat in the one-interpreter pass.
NOT_IN_PROCESS = {"run-storage-folder-missing"}


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def _prepare(name: str, root: Path) -> tuple[Path, list[str], dict[str, bytes | None]]:
    cwd = root / name
    cwd.mkdir()
    ALL[name].setup(cwd)
    return cwd, [a.replace("{cwd}", str(cwd)) for a in ALL[name].args], _snapshot(cwd)


@dataclass
class Outcome:
    code: int | None
    stdout: str
    stderr: str
    cwd: Path
    before: dict[str, bytes | None]
    elapsed: float = 0.0
    heavy: tuple[str, ...] = ()


def _assert_one_error_line(code: int | None, stderr: str, *phrases: str, stdout: str = "") -> str:
    assert code == 2, f"exit {code}\nstdout: {stdout}\nstderr: {stderr}"
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"
    assert "Traceback" not in stdout + stderr
    return lines[0]


def _assert_wrote_nothing(o: Outcome) -> None:
    for name in STORES:
        assert not (o.cwd / name).exists(), f"{name} was written"
    assert _snapshot(o.cwd) == o.before, "a file was created or changed"


def _selected(request, param: str) -> set[str]:
    return {item.callspec.params[param] for item in request.session.items
            if item.module is request.module and hasattr(item, "callspec") and param in item.callspec.params}


@pytest.fixture(scope="module")
def script_outcomes(request, tmp_path_factory) -> dict[str, Outcome]:
    """The selected SCRIPT_CASES, each through the real `sweep` script, a few at a time."""
    root = tmp_path_factory.mktemp("script")
    wanted = _selected(request, "script_case")
    prepared = [(name, *_prepare(name, root)) for name in SCRIPT_CASES if name in wanted]

    def run(item: tuple) -> tuple[str, Outcome]:
        name, cwd, args, before = item
        t0 = time.perf_counter()
        r = _sweep(*args, cwd=cwd, timeout=120)
        return name, Outcome(r.returncode, r.stdout, r.stderr, cwd, before, time.perf_counter() - t0)

    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        return dict(pool.map(run, prepared))


_IN_PROCESS = (
    "import contextlib, io, json, os, sys\n"
    "from sweep.cli import main\n"
    "out = {}\n"
    "for name, cwd, args in json.loads(sys.argv[1]):\n"
    "    os.chdir(cwd)\n"
    "    sys.argv = ['sweep', *args]\n"
    "    err, std = io.StringIO(), io.StringIO()\n"
    "    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):\n"
    "        try:\n"
    "            main()\n"
    "            code = 0\n"
    "        except SystemExit as exc:\n"
    "            code = exc.code\n"
    "    heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'mlflow'})\n"
    "    out[name] = {'code': code, 'stdout': std.getvalue(), 'stderr': err.getvalue(), 'heavy': heavy}\n"
    "print(json.dumps(out))\n"
)


@pytest.fixture(scope="module")
def in_process_outcomes(request, tmp_path_factory) -> dict[str, Outcome]:
    """The selected cases through the script's entry point `sweep.cli:main`, all in one fresh interpreter.

    Cases run in order (the `run` errors first), so ``heavy`` after a case says whether that case or
    one before it imported TensorFlow, Keras or MLflow.
    """
    root = tmp_path_factory.mktemp("inproc")
    wanted = _selected(request, "case")
    prepared = {name: _prepare(name, root) for name in ALL if name in wanted and name not in NOT_IN_PROCESS}
    batch = [(name, str(cwd), args) for name, (cwd, args, _) in prepared.items()]
    r = subprocess.run([sys.executable, "-c", _IN_PROCESS, json.dumps(batch)], env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    return {name: Outcome(report[name]["code"], report[name]["stdout"], report[name]["stderr"], cwd, before,
                          heavy=tuple(report[name]["heavy"]))
            for name, (cwd, _, before) in prepared.items()}


@pytest.mark.parametrize("script_case", SCRIPT_CASES)
def test_sweep_script_exits_2_with_one_error_line_and_writes_nothing(script_outcomes, script_case):
    o = script_outcomes[script_case]
    _assert_one_error_line(o.code, o.stderr, *ALL[script_case].phrases, stdout=o.stdout)
    _assert_wrote_nothing(o)
    assert PASSWORD not in o.stdout + o.stderr


@pytest.mark.parametrize("case", [n for n in ALL if n not in NOT_IN_PROCESS])
def test_entry_point_exits_2_with_one_error_line_and_writes_nothing(in_process_outcomes, case):
    o = in_process_outcomes[case]
    _assert_one_error_line(o.code, o.stderr, *ALL[case].phrases, stdout=o.stdout)
    _assert_wrote_nothing(o)
    assert PASSWORD not in o.stdout + o.stderr
    assert o.heavy == (), f"{case}: imported {o.heavy} before failing; validation must come first"


@pytest.mark.parametrize("script_case", ["status-without-database"])
def test_status_without_a_database_does_not_create_sweep_db(script_outcomes, script_case):
    o = script_outcomes[script_case]
    assert o.code == 2
    assert not (o.cwd / "sweep.db").exists() and list(o.cwd.iterdir()) == []


@pytest.mark.parametrize("script_case", [n for n in SCRIPT_CASES if n.startswith("run-") and n not in NOT_IN_PROCESS])
def test_run_validation_errors_come_fast(script_outcomes, script_case):
    assert script_outcomes[script_case].elapsed < 10, "validation should fail before TensorFlow is imported"


@pytest.mark.parametrize("case", [n for n in ALL if "password" in n])
def test_a_password_in_a_bad_storage_url_is_masked(in_process_outcomes, case):
    o = in_process_outcomes[case]
    assert o.code == 2
    # An HTTP store's credentials move to MLflow's environment variables: its URL is shown without them.
    assert "***" in o.stderr or ("http://127.0.0.1:1" in o.stderr and "bob" not in o.stderr), o.stderr
    assert PASSWORD not in o.stdout + o.stderr


def test_missing_sqlite_folder_is_checked_while_preparing(tmp_path):
    from sweep.config import resolve_config
    from sweep.errors import StorageError
    from sweep.prepared import prepare

    data = _tiny_npz(tmp_path / "d.npz")
    cfg = resolve_config(flags={"storage": f"sqlite:///{tmp_path}/no/such/dir/x.db"})
    with pytest.raises(StorageError, match="does not exist"):
        prepare(cfg, data)


def test_unreachable_postgres_exits_2_within_15_s_with_the_password_masked(tmp_path):
    _tiny_npz(tmp_path / "d.npz")
    t0 = time.perf_counter()
    result = _sweep("run", "d.npz", "--storage", f"postgresql+psycopg://bob:{PASSWORD}@127.0.0.1:1/db", cwd=tmp_path)
    elapsed = time.perf_counter() - t0
    _assert_one_error_line(result.returncode, result.stderr, "cannot open storage",
                           "postgresql+psycopg://bob:***@127.0.0.1:1/db", stdout=result.stdout)
    assert PASSWORD not in result.stdout + result.stderr
    assert elapsed < 15, f"took {elapsed:.1f}s"
    for name in STORES:
        assert not (tmp_path / name).exists(), f"{name} was written"


def _sweep_env(*args: str, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SWEEP), *args], cwd=cwd, env={**_env(), **env}, capture_output=True, text=True,
                          timeout=timeout)


def test_an_npz_larger_than_the_memory_to_spare_is_refused_before_it_is_read(tmp_path):
    _tiny_npz(tmp_path / "d.npz")
    before = _snapshot(tmp_path)
    r = _sweep_env("run", "d.npz", cwd=tmp_path, SWEEP_MAX_DATA_BYTES="1000")
    _assert_one_error_line(r.returncode, r.stderr, "d.npz: its arrays take 2.2 KiB in memory", "SWEEP_MAX_DATA_BYTES",
                           stdout=r.stdout)
    assert _snapshot(tmp_path) == before


@pytest.fixture
def read_only():
    """Make files read-only for real: chmod for a normal user; root writes through chmod, so chattr +i."""
    frozen: list[Path] = []

    def freeze(path: Path) -> None:
        if os.geteuid() == 0:
            r = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
            if r.returncode != 0:
                pytest.skip(f"cannot make a file read-only as root here: {r.stderr.strip()}")
        else:
            path.chmod(0o444)
        frozen.append(path)

    yield freeze
    for path in frozen:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        else:
            path.chmod(0o644)


def test_a_read_only_sqlite_storage_is_one_line_and_left_alone(tmp_path, read_only):
    _tiny_npz(tmp_path / "d.npz")
    _existing_db(tmp_path)
    read_only(tmp_path / "existing.db")
    before = _snapshot(tmp_path)
    r = _sweep_env("run", "d.npz", "--storage", f"sqlite:///{tmp_path}/existing.db", cwd=tmp_path)
    _assert_one_error_line(r.returncode, r.stderr, "existing.db is read-only", "chmod u+w", stdout=r.stdout)
    assert _snapshot(tmp_path) == before


def test_a_read_only_mlflow_store_is_found_before_the_study_is_created(tmp_path, read_only):
    _tiny_npz(tmp_path / "d.npz")
    (tmp_path / "mlflow.db").write_bytes(b"")
    read_only(tmp_path / "mlflow.db")
    before = _snapshot(tmp_path)
    r = _sweep_env("run", "d.npz", cwd=tmp_path)
    _assert_one_error_line(r.returncode, r.stderr, f"MLflow store sqlite:///{tmp_path}/mlflow.db", "read-only",
                           stdout=r.stdout)
    assert _snapshot(tmp_path) == before, "the Optuna storage was written before the tracking store was checked"


def test_rich_markup_in_study_names_and_labels_is_printed_as_text(tmp_path):
    """A study named "[bold]x" or labels like "[/]a" crashed the CLI (Rich read them as markup)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X_train=rng.normal(size=(40, 6, 2)).astype(np.float32),
             y_train=np.array(["[/]a"] * 30 + ["[bold]b"] * 10))
    r = _sweep_env("run", "d.npz", "--study", "[bold]x", "--create-only", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "[bold]x" in r.stdout and "[/]a: 30, [bold]b: 10" in r.stdout and "Traceback" not in r.stderr
    assert "sweep worker '[bold]x' --data" in r.stdout  # the worker hint is a runnable command line
    r = _sweep_env("status", "[bold]x", cwd=tmp_path)
    assert r.returncode == 0 and "study [bold]x:" in r.stdout, r.stderr
    r = _sweep_env("diagnose", "d.npz", cwd=tmp_path)
    assert r.returncode == 0 and "[/]a" in r.stdout and "[bold]b" in r.stdout, r.stderr


def test_a_study_named_like_an_option_reaches_the_workers_as_a_name():
    """`sweep run --study=-x --workers 2`: the workers' command line must not read "-x" as an option."""
    from types import SimpleNamespace

    import typer

    from sweep.cli import app
    from sweep.workers import worker_command

    prep = SimpleNamespace(name="-x", data=SimpleNamespace(source="d.npz"))
    args = worker_command(SimpleNamespace(prep=prep), threads=1)
    assert args[1:4] == ["-m", "sweep", "worker"]
    command = typer.main.get_command(app)
    ctx = command.make_context("sweep", args[3:], resilient_parsing=False)
    sub = command.get_command(ctx, "worker")
    params = sub.make_context("worker", args[4:], parent=ctx).params
    assert params["study"] == "-x" and params["threads"] == 1 and params["quiet"]


def test_the_study_stores_an_absolute_tracking_uri_so_predict_works_from_another_folder(tmp_path):
    home, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    home.mkdir(), elsewhere.mkdir()
    _tiny_npz(home / "d.npz")
    r = _sweep_env("run", "d.npz", "--create-only", "--storage", f"sqlite:///{home}/sweep.db", cwd=home)
    assert r.returncode == 0, r.stderr
    import optuna

    study = optuna.load_study(study_name="d", storage=f"sqlite:///{home}/sweep.db")
    assert study.user_attrs["tracking_uri"] == f"sqlite:///{home}/mlflow.db"
    # From another folder predict finds the study's store and goes on to its champion (none yet),
    # instead of looking for ./mlflow.db.
    r = _sweep_env("predict", "d", str(home / "d.npz"), "--storage", f"sqlite:///{home}/sweep.db", cwd=elsewhere)
    line = _assert_one_error_line(r.returncode, r.stderr, stdout=r.stdout)
    assert "no MLflow store" not in line and "no completed trial, so no champion model" in line, line
