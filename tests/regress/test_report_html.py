"""report.html opens in a real browser: headless Chromium (installed by scripts/setup.sh) loads it, its DOM holds
both plots as SVG of non-zero size, and the screenshot shows them painted (the plots' two colours on screen)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from structgen.cli import main
from structgen.regress.plots import svg_size_ok

from .synthetic import fingerprint, golden, write_run, wrong

# Without the background-networking flags Chromium waits on the closed network; --no-sandbox: we run as root.
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no headless Chromium: scripts/setup.sh installs Debian's chromium (apt-get install chromium)")


def _browser(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([_chromium(), *_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    g = golden(24)
    base = write_run(tmp / "base", g, {}, latency={f"c{i:03d}": 0.2 + 0.01 * i for i in range(24)})
    cand = write_run(tmp / "cand", g, {f"c{i:03d}": wrong(i) for i in range(7)},
                     latency={f"c{i:03d}": 0.3 + 0.02 * i for i in range(24)}, fp=fingerprint(quantization="int8"))
    assert main(["regress", "compare", str(base), str(cand), "--quiet"]) == 1
    return cand / "report.html"


def test_report_is_self_contained_with_both_plots_and_the_diff_view(report):
    html = report.read_text()
    for plot in ("plot-accuracy", "plot-latency"):
        figure = html[html.index(f'<figure id="{plot}">'):]
        svg = figure[figure.index("<svg"): figure.index("</svg>")]
        assert svg_size_ok(svg) and "<path" in svg
    assert "<script" not in html and 'src="http' not in html and "href=\"http" not in html.replace(
        'xmlns:xlink="http', "")
    assert "<ins>" in html and "REGRESSED" in html and "int8" in html


def test_chromium_renders_the_plots(report, tmp_path):
    dom = _browser(tmp_path, "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for plot in ("plot-accuracy", "plot-latency"):
        figure = dom.stdout[dom.stdout.index(f'<figure id="{plot}">'):]
        assert svg_size_ok(figure[figure.index("<svg"): figure.index("</svg>")])
    shot = tmp_path / "shot.png"
    r = _browser(tmp_path, f"--screenshot={shot}", "--window-size=1280,2600", report.as_uri())
    assert r.returncode == 0 and shot.stat().st_size > 0, r.stderr[-2000:]
    import matplotlib.image

    pixels = (matplotlib.image.imread(str(shot))[..., :3] * 255).round().astype(np.int16)   # (H, W, 3)
    assert pixels.std() > 10   # not a blank page
    for colour in ((0x4C, 0x72, 0xB0), (0xDD, 0x84, 0x52)):   # the baseline's and the candidate's bars / lines
        near = np.abs(pixels - np.array(colour)).max(axis=-1) <= 8
        assert near.sum() > 500, f"plot colour {colour} is not on screen"


def test_inline_diff_marks_removed_and_added_text_escaped():
    from structgen.regress.report_html import inline_diff

    assert inline_diff('{"a": "<b>"}', '{"a": "<c>"}') == '{&quot;a&quot;: &quot;&lt;<del>b</del><ins>c</ins>&gt;&quot;}'
    assert inline_diff("same", "same") == "same"
