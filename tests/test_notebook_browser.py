"""What the notebook outputs look like in a real browser: headless Chromium (Debian's
``chromium``) driven by Playwright, as tests/test_report_browser.py does it.

Skipped, saying why, when Chromium is missing (``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}
"""A laptop's browser window."""

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is missing (/usr/bin/chromium): the notebook's browser tests need it "
           "(apt-get install chromium; .ci/run installs it).",
)

DARK_ROWS = """async ([png, x0, x1]) => {
  // For each pixel row of the image: whether a dark pixel lies between columns x0 and x1.
  const img = new Image(); img.src = 'data:image/png;base64,' + png; await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.width; canvas.height = img.height;
  const ctx = canvas.getContext('2d'); ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, img.width, img.height).data;
  const rows = [];
  for (let y = 0; y < img.height; y++) {
    let dark = false;
    for (let x = x0; x < x1; x++) {
      const i = 4 * (y * img.width + x);
      if (d[i] < 128 && d[i + 1] < 128 && d[i + 2] < 128) dark = true;
    }
    rows.push(dark);
  }
  return rows;
}"""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            headless=True, args=ARGS, viewport=VIEWPORT,
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def test_a_family_label_keeps_its_underscores(page: Any) -> None:
    """The display's last line, ``__main__.sq``, shows its underscores: rich's
    ``line-height:normal`` left them under the bottom of the scrolling <pre>, which cut them
    off (JupyterLab showed ``main  .sq``). Looked for as dark pixels under the first two
    characters of the last line, which only the underscores can make."""
    from rich.text import Text

    from checkpoint._notebook_screen import bundle

    html = bundle(Text("mods.base     3/3\n__main__.sq   3/3"))["text/html"]
    # Sized as JupyterLab's output area is (14 px text in a scrolling box).
    page.set_content(f'<body style="margin:0;font-size:14px"><div style="overflow:auto;'
                     f'padding:8px">{html}</div></body>')
    pre = page.locator("pre")
    box = pre.bounding_box()
    char = page.evaluate("""() => { const s = document.createElement('span');
        s.textContent = '__'; document.querySelector('pre').appendChild(s);
        const w = s.getBoundingClientRect().width; s.remove(); return w; }""")
    rows = page.evaluate(DARK_ROWS, [base64.b64encode(pre.screenshot()).decode(), 0, int(char)])
    last_line = rows[round(box["height"] / 2):]  # the lower of the two lines
    assert any(last_line), "the underscores of __main__ are cut off"


def test_a_wide_fan_in_shows_its_target_in_the_window(page: Any, make_module: Any) -> None:
    """A target with 40 leaf prerequisites: Graphviz drew one row 4,268 px wide, the target
    off screen. Its leaves are now a box of rows with one edge into the target, which the
    browser shows within a laptop's window, all of the picture's width too."""
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is missing (apt-get install graphviz)")
    from checkpoint.export import view

    mod = make_module("fanin_mod", FAN_IN)
    svg = view(mod.main(40)).svg()
    page.set_content(f'<body style="margin:0"><div style="padding:8px">{svg}</div></body>')
    target = page.locator("g.node", has_text="main(40)")
    box = target.bounding_box()
    picture = page.locator("svg").bounding_box()
    assert picture["width"] <= VIEWPORT["width"], picture
    assert 0 <= box["x"] and box["x"] + box["width"] <= VIEWPORT["width"], box
    assert 0 <= box["y"] and box["y"] + box["height"] <= VIEWPORT["height"], box
    assert page.locator("g.node", has_text="sq(39)").count() == 1  # every leaf is drawn


FAN_IN = """
from checkpoint import requires, task

@task
def sq(i: int):
    def __():
        return i * i
    return __

@task
def main(n: int):
    @requires([sq(i) for i in range(n)])
    def __(xs):
        return sum(xs)
    return __
"""
