"""The README's promises that a test can hold: its two commands, and CI running the second."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_two_commands_the_first_sweeps_seed_signal():
    main, tests = _commands()
    assert "sweep make-data seed-signal" in main and "sweep run seed-signal.npz --budget 6m" in main
    assert main.startswith("python3 -m venv .venv") and tests.startswith("python3 -m venv .venv")
    assert tests.rstrip().endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = _commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests.strip() in ci_lines


def test_every_command_in_the_readme_table_exists():
    from sweep.cli import app
    import typer.main

    names = set(typer.main.get_command(app).commands)
    documented = set(re.findall(r"^\| `sweep ([a-z-]+)", (ROOT / "README.md").read_text(), re.M))
    assert documented and documented <= names


def test_the_readme_config_example_is_a_valid_config_file(tmp_path):
    from sweep.config import resolve_config

    block = re.search(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    path = tmp_path / "sweep.toml"
    path.write_text(block)
    cfg = resolve_config(config_file=path)
    assert cfg.space.pooling == ("last", "mean", "attention") and cfg.space.conv_filters == (0, 64)
    assert cfg.space.masking == (False, True) and cfg.space.bidirectional == (False, True)
    assert cfg.space.architecture == ("stacked", "lstm_fcn") and cfg.space.lr_schedule == ("plateau", "cosine")
    assert cfg.space.fcn_filters == (64, 128)
