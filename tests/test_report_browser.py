"""`oracle report --html` opened in a real headless browser (Chromium, Debian package `chromium`).

Two checks on the rendered page: a screenshot that must not be blank (enough non-white
pixels, many colours: tables and plots painted), and the DOM after load (every image decoded
with a non-zero size, the scenario column, the tables and the time-series figures present).
The checks are shown to fail on a blank page and on a page with a broken image. Skipped,
saying so, where Chromium is not installed.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import oracle
from oracle.report import report_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((b for b in BROWSERS if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="Chromium not installed (Debian package: chromium)")

SCENARIO = {
    "name": "browser", "seed": 4,
    "simulation": {"duration_s": 40},
    "model": {"name": "llama-3.1-8b"}, "hardware": {"gpu": "h100-sxm"},
    "workload": {"clients": [
        {"name": "chat", "arrival": {"process": "poisson", "rate": 6.0}, "prompt_tokens": 400, "output_tokens": 120,
         "conversation": {"turns": 3, "think_time_s": 2.0}, "system_prompt_tokens": 300},
        {"name": "bench", "concurrency": 8, "prompt_tokens": 800, "output_tokens": 64}]},
    "frameworks": [{"name": "prefix-aware", "replicas": 2, "router": "prefix_aware"},
                   {"name": "no-cache", "replicas": 2, "enable_prefix_caching": False}],
}

PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.from(document.images);
  var out = {images: imgs.length,
             broken: imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length,
             tables: document.querySelectorAll("table").length,
             figures: Array.from(document.querySelectorAll("figure")).map(function (f) { return f.id; }),
             scenario: !!document.querySelector("aside#scenario pre"),
             height: document.body.scrollHeight};
  var p = document.createElement("pre"); p.id = "probe"; p.textContent = JSON.stringify(out);
  document.body.appendChild(p);
});
</script>"""


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def screenshot(page: Path, tmp: Path, *, size=(1600, 3000)) -> np.ndarray:
    out = tmp / f"{page.stem}.png"
    proc = _chromium(f"--window-size={size[0]},{size[1]}", f"--screenshot={out}", page.as_uri(), tmp=tmp)
    assert out.is_file(), proc.stderr[-2000:]
    from PIL import Image
    return np.asarray(Image.open(out).convert("RGB"))


def probe(page: Path, tmp: Path) -> dict:
    """The page's DOM after load, as seen by the injected probe script."""
    text = page.read_text(encoding="utf-8")
    probed = tmp / f"probed-{page.name}"
    probed.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = _chromium("--virtual-time-budget=10000", "--dump-dom", probed.as_uri(), tmp=tmp)
    m = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, "the page did not load (no probe output): " + proc.stderr[-2000:]
    return json.loads(html.unescape(m.group(1)))


def page_problems(shot: np.ndarray, dom: dict) -> list[str]:
    """Why a rendered report looks blank or broken (empty: it looks right)."""
    problems = []
    non_white = float((shot.min(axis=2) < 235).mean())
    colours = len(np.unique(shot.reshape(-1, 3)[::7], axis=0))
    if non_white < 0.01:
        problems.append(f"blank: only {non_white:.1%} of the screenshot is not white")
    if colours < 40:
        problems.append(f"blank: only {colours} colours in the screenshot")
    if dom.get("broken"):
        problems.append(f"{dom['broken']} of {dom['images']} images did not decode")
    if not dom.get("images"):
        problems.append("no images")
    if not dom.get("tables"):
        problems.append("no tables")
    return problems


@pytest.fixture(scope="module")
def report_page(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "run"
    oracle.simulate(SCENARIO, out_dir=out, record_steps=True)
    report_run(out, plots=False, json_out=False, html=True, console=_quiet_console())
    return out / "report.html"


def _quiet_console():
    import io

    from rich.console import Console
    return Console(file=io.StringIO(), width=200)


def test_report_renders_in_chromium(report_page, tmp_path):
    shot = screenshot(report_page, tmp_path)
    dom = probe(report_page, tmp_path)
    assert page_problems(shot, dom) == [], dom
    assert dom["scenario"], "the scenario column is missing"
    for fig in ("latency_cdf", "queue_over_time", "kv_cache_over_time", "prefix_hit_rate_over_time",
                "replicas_prefix-aware", "replicas_no-cache"):
        assert fig in dom["figures"], (fig, dom["figures"])
    assert dom["tables"] >= 5          # configuration, comparison, latency, throughput, prefix cache
    assert dom["height"] > 3000        # tables and figures laid out, not collapsed
    # the scenario column sits beside the tables: its text is in the page's left part
    text = html.unescape(report_page.read_text(encoding="utf-8"))
    assert 'router = "prefix_aware"' in text and "concurrency = 8" in text


def test_the_checks_fail_on_a_blank_page(tmp_path):
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><head><title>x</title></head><body></body></html>")
    problems = page_problems(screenshot(blank, tmp_path), probe(blank, tmp_path))
    assert any(p.startswith("blank") for p in problems) and "no tables" in problems


def test_the_checks_fail_on_a_broken_image(report_page, tmp_path):
    text = report_page.read_text(encoding="utf-8")
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r'src="data:image/png;base64,[^"]{200}', 'src="data:image/png;base64,AAAA', text,
                             count=1), encoding="utf-8")
    problems = page_problems(screenshot(broken, tmp_path), probe(broken, tmp_path))
    assert any("did not decode" in p for p in problems), problems
