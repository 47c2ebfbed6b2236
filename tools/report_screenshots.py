"""Make the run report screenshots of the docs (docs/images/report*.png).

Usage (from the repository root, with Debian's chromium installed)::

    .venv/bin/python tools/report_screenshots.py

Runs a small pipeline (downloads, cleaning, features, five trainings of which one fails) with
``checkpoint run -k -j 4 --report``, opens the report in headless Chromium and saves the page,
its timeline, and a task's details.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
CHECKPOINT = str(Path(sys.executable).parent / "checkpoint")

TASKFILE = '''
import time
from checkpoint import task, requires

@task
def download(shard: int):
    def __():
        print(f"downloading shard {shard}")
        time.sleep(0.15 + 0.05 * (shard % 3))
        return list(range(shard * 100, shard * 100 + 100))
    return __

@task
def clean(shard: int):
    @requires(download(shard))
    def __(rows):
        print(f"cleaning shard {shard}: {len(rows)} rows")
        time.sleep(0.05 + 0.03 * (shard % 4))
        return [r for r in rows if r % 7]
    return __

@task
def features(shards: int = 8):
    @requires([clean(s) for s in range(shards)])
    def __(parts):
        time.sleep(0.1)
        return [x for p in parts for x in p]
    return __

@task
def train(seed: int):
    @requires(features())
    def __(data):
        print(f"training with seed {seed} on {len(data)} rows")
        for epoch in range(1, 4):
            time.sleep(0.1 + 0.03 * seed)
            print(f"epoch {epoch}: loss {1 / (epoch + seed):.3f}")
        if seed == 3:
            raise FloatingPointError("loss diverged at epoch 4 (learning rate too high)")
        return sum(data) % (seed + 7)
    return __

@task
def evaluate(seed: int):
    @requires(train(seed))
    def __(model):
        time.sleep(0.05)
        return model / 10
    return __

@task
def main():
    @requires([evaluate(s) for s in range(5)])
    def __(scores):
        return max(scores)
    return __
'''


def main() -> None:
    from playwright.sync_api import sync_playwright

    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "taskfile.py").write_text(textwrap.dedent(TASKFILE))
        subprocess.run([CHECKPOINT, "run", "-k", "-j", "4", "--report", "report.html"],
                       cwd=project, capture_output=True, check=False)
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(project / "profile"), executable_path="/usr/bin/chromium", headless=True,
                args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic",
                      "--no-first-run", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync"],
                viewport={"width": 1280, "height": 900}, device_scale_factor=1,
            )
            page = context.new_page()
            page.goto((project / "report.html").as_uri())
            page.wait_for_selector("body[data-ready=true]")
            page.screenshot(path=str(IMAGES / "report.png"), full_page=True)
            page.locator("#timeline-section").screenshot(path=str(IMAGES / "report-timeline.png"))
            bar = page.locator("#timeline rect.bar.failed").first
            bar.click()
            page.screenshot(path=str(IMAGES / "report-details.png"))
            context.close()
    for name in ("report.png", "report-timeline.png", "report-details.png"):
        print(IMAGES / name)


if __name__ == "__main__":
    main()
