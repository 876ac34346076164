"""Import boundaries: the pure modules and the CLI's start-up path never load TensorFlow, Keras or MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SWEEP = Path(sys.executable).parent / "sweep"
HEAVY = ("tensorflow", "keras", "mlflow")
LIGHT_MODULES = (
    "sweep.config",
    "sweep.data",
    "sweep.synthetic",
    "sweep.study",
    "sweep.storage",
    "sweep.loop",
    "sweep.records",
    "sweep.ranking",
    "sweep.summary",
    "sweep.explain",
    "sweep.cli",
    "sweep.cli_options",
    "sweep.cli_results",
    "sweep.cli_models",
    "sweep.runner",
    "sweep.prepared",
    "sweep.clock",
    "sweep.retrain",
    "sweep.join",
    "sweep.sync",
    "sweep.workers",
    "sweep.sqlite",
    "sweep.diagnose",
    "sweep.redact",
    "sweep.preflight",
    "sweep.integrity",
    "objectives.metrics",
    "objectives.search_space",
    "objectives.imbalance",
)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SWEEP_STORAGE")}


def _first_heavy_import(modules: tuple[str, ...], *, extra_path: Path | None = None) -> str:
    """Import ``modules`` one at a time in a fresh interpreter; name the first that loads a heavy package."""
    code = (
        "import importlib, sys\n"
        f"heavy = {HEAVY!r}\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    loaded = sorted({m.split('.')[0] for m in sys.modules} & set(heavy))\n"
        "    if loaded:\n"
        "        print(f'{name} imported {loaded}')\n"
        "        break\n"
        "else:\n"
        "    print('clean')\n"
    )
    env = _env()
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_light_modules_do_not_import_tensorflow_keras_or_mlflow():
    assert _first_heavy_import(LIGHT_MODULES) == "clean"


def test_tracking_loads_mlflow_but_not_tensorflow():
    """`sweep run --create-only` (study + MLflow run, no training) must not pay for TensorFlow."""
    code = "import sys, sweep.tracking; print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_probe_notices_a_module_that_pulls_in_a_heavy_package(tmp_path):
    # Guards against a vacuous check, without paying for a real TensorFlow import.
    (tmp_path / "pulls_keras.py").write_text(
        "import sys, types\nsys.modules['keras.layers'] = types.ModuleType('keras.layers')\n")
    assert _first_heavy_import(("sweep.errors", "pulls_keras"), extra_path=tmp_path) == (
        "pulls_keras imported ['keras']")


def test_sweep_help_exits_0_and_lists_the_commands(tmp_path):
    # How fast it answers is a benchmark figure (benchmarks/startup.py), not a bound a busy machine
    # can break; that it stays fast is the import checks above.
    assert SWEEP.exists(), f"console script not installed at {SWEEP}"
    result = subprocess.run([str(SWEEP), "--help"], cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=30)
    assert result.returncode == 0, result.stderr
    for command in ("run", "worker", "diagnose", "status", "best", "studies", "export", "make-data", "ui"):
        assert command in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_the_commands_that_read_a_study_do_not_import_scikit_learn():
    # scikit-learn (and SciPy under it) take 1-1.5 s to import: `sweep status`, `best` and `studies`
    # rank trials (objectives.metrics.rank_key) but score nothing, so they start without it.
    code = ("import sys, sweep.cli, sweep.cli_results, sweep.records, sweep.ranking, sweep.display\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
