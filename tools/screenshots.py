"""Look at lstm-sweep's results as a user does: in the MLflow UI, in a real (headless) browser.

Runs a small sweep on the demo set in a scratch folder, diagnoses it, starts `sweep ui` on
127.0.0.1 and drives Debian's Chromium (through Playwright, with the system browser: nothing is
downloaded) to screenshot:

* ``runs.png``: the study's experiment page, the trials expanded under the study run;
* ``trial_curves.png``: the best trial's per-epoch curves (Model metrics tab, its ``result/`` section folded);
* ``parent_plots.png``: the study run's balanced accuracy by class-weight strategy (Artifacts tab);
* ``parent_confusion.png``: the best model's validation and test confusion matrices.

    apt-get install -y chromium && .venv/bin/pip install -e '.[screenshots]'
    .venv/bin/python tools/screenshots.py            # ~2 min; writes docs/screenshots/*.png

Chromium runs with ``--headless --no-sandbox --disable-gpu --disable-background-networking``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWEEP = str(Path(sys.executable).parent / "sweep")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(*args: str, cwd: Path) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "160"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.strip()[-800:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--browser", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    if not Path(args.browser).exists():
        raise SystemExit(f"no browser at {args.browser}: apt-get install -y chromium (or pass --browser)")
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sweep-screens-") as tmp:
        work = Path(tmp)
        sh(SWEEP, "make-data", "seed-signal", "--out", "demo.npz", "--n", "600", "--n-test", "600", cwd=work)
        sh(SWEEP, "run", "demo.npz", "--n-trials", "8", "--epochs", "8", "--retrain-top", "2", "--retrain-seeds", "2",
           cwd=work)
        sh(SWEEP, "diagnose", "--study", "demo", "--no-data-check", cwd=work)
        client = MlflowClient(f"sqlite:///{work}/mlflow.db")
        exp = client.get_experiment_by_name("demo").experiment_id
        parent = client.search_runs([exp], filter_string="tags.`sweep.role` = 'parent'")[0]
        best_run = parent.data.tags["best.run_id"]

        port = free_port()
        ui = subprocess.Popen([SWEEP, "ui", "--port", str(port)], cwd=work, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{base}/health", timeout=2)
                    break
                except OSError:
                    if time.time() > deadline or ui.poll() is not None:
                        raise SystemExit("sweep ui did not start") from None
                    time.sleep(0.5)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.browser, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1500, "height": 900})

                def shot(url: str, name: str, *, wait_ms: int = 3500, artifact: str | None = None) -> None:
                    page.goto(url)
                    page.wait_for_timeout(wait_ms)
                    if artifact is not None:  # the SPA ignores a changed artifact path in the URL: click it
                        *folders, file = artifact.split("/")
                        for folder in folders:  # open the folders (the tree remembers open ones), then the file
                            if not page.get_by_text(file, exact=True).count():
                                page.get_by_text(folder, exact=True).first.click()
                                page.wait_for_timeout(1000)
                        page.get_by_text(file, exact=True).first.click()
                        page.wait_for_timeout(1500)
                    close = page.locator('button[aria-label="Close"]')  # MLflow's assistant side panel
                    if close.count():
                        close.first.click()
                    if name == "trial_curves.png":  # fold the one-value results so the curves show
                        page.get_by_text("result", exact=True).first.click()
                        page.wait_for_timeout(1000)
                    if name == "runs.png":
                        page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
                        page.wait_for_timeout(1000)
                    page.screenshot(path=str(args.out / name))
                    print(f"wrote {args.out / name}")

                shot(f"{base}/#/experiments/{exp}/runs", "runs.png")
                shot(f"{base}/#/experiments/{exp}/runs/{best_run}/model-metrics", "trial_curves.png")
                artifacts = f"{base}/#/experiments/{exp}/runs/{parent.info.run_id}/artifacts"
                shot(artifacts, "parent_plots.png", artifact="plots/balanced_accuracy_by_class_weight.png")
                shot(artifacts, "parent_confusion.png", artifact="plots/best_confusion_matrix.png")
                browser.close()
        finally:
            os.killpg(ui.pid, 15)
            ui.wait(timeout=20)


if __name__ == "__main__":
    main()
