"""Re-takes docs/mlflow_benchmark_charts.png: MLflow's chart view of the latest benchmark, its child runs expanded and
all shown, the training curves folded, so that every evaluation metric is one chart with every method side by side.

Needs the project's .venv (for `mlflow server`), Debian's Chromium (`apt-get install chromium`) and Playwright in any
Python (`python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright`; no browser download: it drives
/usr/bin/chromium). After `make run` and `.venv/bin/kedro run --pipelines benchmark`, from the project root:

    /tmp/pw/bin/python docs/mlflow_screenshot.py
"""

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

PROJECT = Path(__file__).resolve().parents[1]
PORT = 5055
URL = f"http://127.0.0.1:{PORT}"
OUT = PROJECT / "docs" / "mlflow_benchmark_charts.png"


def experiment_id(name: str) -> str:
    query = urllib.parse.urlencode({"experiment_name": name})
    with urllib.request.urlopen(f"{URL}/api/2.0/mlflow/experiments/get-by-name?{query}") as response:
        return json.load(response)["experiment"]["experiment_id"]


def main() -> None:
    server = subprocess.Popen(
        [PROJECT / ".venv/bin/mlflow", "server", "--backend-store-uri", "sqlite:///mlflow.db",
         "--host", "127.0.0.1", "--port", str(PORT), "--workers", "1"],
        cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{URL}/health")
                break
            except OSError:
                time.sleep(1)
        children = urllib.parse.quote("tags.benchmark_method LIKE '%'")
        page_url = (
            f"{URL}/#/experiments/{experiment_id('flat_pipeline')}/runs?compareRunsMode=CHART&searchFilter={children}"
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1700, "height": 1250})
            page.goto(page_url)
            page.wait_for_timeout(5000)
            # expand the benchmark's run, close the assistant panel, show every run (10 by default), fold the curves
            page.locator("[role='gridcell'][col-id='3']").first.locator("button").first.click()
            page.get_by_role("button", name="Close").last.click()
            page.get_by_role("button", name="Toggle visibility of runs").click()
            page.get_by_text("Show all runs").click()
            page.get_by_text("train/unlearn", exact=True).first.click()
            page.wait_for_timeout(4000)
            page.screenshot(path=OUT)
            browser.close()
        print(f"{OUT} from {page_url}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
