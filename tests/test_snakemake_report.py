"""``snakemake --report``: the tiny run's tables and figures are in the report and render in a real browser.

The report is a JavaScript app (React) with no URL routes: a result's page is opened by the app's own
``app.showResultInfo(path)`` / ``app.setView(...)``, the calls its links and buttons make. The test opens
the report as written, then copies of it with one script appended that makes such a call, in headless
Chromium (Debian package ``chromium``), and reads the DOM after the JavaScript ran (``--dump-dom``).
"""
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from pipeline import TINY, snakemake
TABLE, HEADROOM, CHOICES, VS_PAPER = ("results/tables/tiny.csv", "results/tables/tiny_headroom.csv",
                                      "results/tables/tiny_choices.csv", "results/tables/tiny_vs_paper.csv")
FIGURE = "results/figures/tiny/certified_accuracy.png"
METHODS = ["global σ=0.25", "global σ=0.5", "oracle over global σ (not a certificate)",
           "cascade (union bound)", "dual (off-the-shelf)", "dual (finetuned)", "router"]

# Runs after the report's own scripts: waits for the app, makes one navigation call, and records in the
# DOM (attribute data-probe of <body>) what it then sees, once React has rendered.
PROBE = """<script>
(function () {
  const wait = setInterval(function () {
    if (typeof app === "undefined") return;
    clearInterval(wait);
    %s
    setTimeout(function () {
      const img = document.querySelector("#app img[src^='data:image/png']");
      document.body.setAttribute("data-probe", JSON.stringify(
        {img: img ? [img.complete, img.naturalWidth, img.naturalHeight] : null}));
    }, 2000);
  }, 50);
})();
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("headless Chromium is needed to render the report: apt-get install chromium (Debian package)")


def browse(page: Path, profile: Path, *, screenshot: Path | None = None) -> str:
    """The DOM of ``page`` after its JavaScript ran (and a 1400×1000 screenshot of it)."""
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--window-size=1400,1000"]
    if screenshot is not None:
        subprocess.run([*flags, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120,
                       check=True)
        assert screenshot.stat().st_size > 10_000
    return subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                          check=True).stdout


def navigated(report: Path, call: str) -> Path:
    """A copy of ``report`` that makes the app call ``call`` once it has started."""
    page = report.with_name(f"{report.stem}_{len(list(report.parent.glob('*.html')))}.html")
    text = report.read_text()
    end = text.rindex("</body>")
    page.write_text(text[:end] + PROBE % call + text[end:])
    return page


def visible(dom: str) -> str:
    """The rendered DOM without <script> elements (the report's data sits in scripts as JSON)."""
    return re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)


@pytest.mark.slow
def test_report_holds_and_renders_the_tables_and_figures(tiny_run, tmp_path):
    report = tmp_path / "report.html"
    snakemake(tiny_run, TABLE, "--configfile", str(TINY), "--report", str(report))
    check_report(report, tiny_run, tmp_path)
    # the zip form: the page, and every reported file as is
    snakemake(tiny_run, TABLE, "--configfile", str(TINY), "--report", str(tmp_path / "report.zip"))
    names = zipfile.ZipFile(tmp_path / "report.zip").namelist()
    figures = [p.name for p in (tiny_run / "results" / "figures" / "tiny").glob("*.png")]
    assert "report/report.html" in names
    assert {Path(n).name for n in names if n.startswith("report/data/raw/")} == \
        {Path(TABLE).name, Path(HEADROOM).name, Path(CHOICES).name, Path(VS_PAPER).name, *figures}


def check_report(report: Path, work: Path, tmp_path: Path) -> None:
    """What ``report`` of the run in ``work`` holds, and how Chromium renders it (screenshots under
    ``tmp_path/shots``)."""

    # what the report holds: the four tables, each shown as an HTML table in its description, the PNGs
    results = json.loads(re.search(r'<script id="results">\s*var results = (.*?);?\s*</script>',
                                   report.read_text(), flags=re.S).group(1))
    figures = sorted(p.name for p in (work / "results" / "figures" / "tiny").glob("*.png"))
    assert set(results) == {TABLE, HEADROOM, CHOICES, VS_PAPER} | {f"results/figures/tiny/{f}" for f in figures}
    assert {"certified_accuracy.png", "delta_rc_ecdf.png", "dual_finetuned_choices.png"} <= set(figures)
    for path, result in results.items():
        assert result["job_properties"]["rule"] == "report" and result["caption"]
        assert result["mime_type"] == ("text/csv" if path.endswith(".csv") else "image/png")
    for method in METHODS:
        assert f"<td>{method}</td>" in results[TABLE]["caption"]
    assert "<table" in results[HEADROOM]["caption"] and "headroom share" in results[HEADROOM]["caption"].lower()
    assert "<table" in results[CHOICES]["caption"] and "<td>dual (finetuned)</td>" in results[CHOICES]["caption"]
    assert "No published number of &#x27;tiny&#x27;" in results[VS_PAPER]["caption"] or \
        "No published number of 'tiny'" in results[VS_PAPER]["caption"]
    assert "not a certificate" in results[FIGURE]["caption"]

    # in the browser: the landing page (workflow description, the results menu) ...
    shots = tmp_path / "shots"
    shots.mkdir()
    landing = visible(browse(report, tmp_path / "profile", screenshot=shots / "report.png"))
    assert "Dual randomized smoothing" in landing and "variance estimator" in landing and ">Results<" in landing
    # ... the table's page: its description renders the table with every method name ...
    page = navigated(report, f"app.showResultInfo({json.dumps(TABLE)});")
    dom = visible(browse(page, tmp_path / "profile", screenshot=shots / "table.png"))
    rendered = dom[dom.index("Description"):]
    assert "<table" in rendered and "certified accuracy at radius r" in rendered
    for method in METHODS:
        assert f"<td>{method}</td>" in rendered, method
    # ... and a figure's page: the PNG is an <img> the browser decoded
    show = (f"app.setView({{navbarMode: 'resultinfo', content: 'img', resultPath: {json.dumps(FIGURE)}, "
            f"contentPath: results[{json.dumps(FIGURE)}].data_uri}});")
    dom = browse(navigated(report, show), tmp_path / "profile", screenshot=shots / "figure.png")
    probe = json.loads(re.search(r'data-probe="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    complete, width, height = probe["img"]
    assert complete and width > 500 and height > 300
    assert "Certified accuracy vs radius" in visible(dom)
