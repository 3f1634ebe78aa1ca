"""The committed reports as a reviewer sees them: reports/index.html and every rendered
stage report opened in headless Chromium.

Each page is loaded from a copy with a ``<base>`` pointing at its real folder (so
relative images and links resolve as in the original) and a script that, once the
page has loaded, records the images the browser could not decode; Chromium's
``--dump-dom`` returns the page after that. A test fails on a missing or broken
image, a relative link to a file that does not exist (or an ``#anchor`` not on the
page), a stray repr in the rendered text (``PosixPath(``, ``<matplotlib.``) or a
warning box (a stderr output cell). Skipped with a message when Chromium is not
installed and cannot be (``apt-get install -y chromium``, tried once).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
PAGES = [REPORTS / "index.html", *sorted((REPORTS / "html").glob("*.html"))]
STRAY_REPRS = ("PosixPath(", "&lt;matplotlib.", "<matplotlib.")
STDERR_BOX = 'data-mime-type="application/vnd.jupyter.stderr"'

_PROBE = """<script>
window.addEventListener("load", () => {
  const bad = [...document.images]
    .filter((im) => !(im.complete && im.naturalWidth > 0))
    .map((im) => (im.getAttribute("src") || "").slice(0, 80));
  document.documentElement.setAttribute("data-broken-images", JSON.stringify(bad));
});
</script>"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=600
        )
        return shutil.which("chromium")
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = _chromium()
    if exe is None:
        pytest.skip("headless Chromium not available (apt-get install -y chromium failed)")
    return exe


def render(chromium: str, page: Path, tmp: Path) -> str:
    """The DOM of ``page`` after load, as Chromium serialises it."""
    text = page.read_text(encoding="utf-8")
    head = re.search(r"<head[^>]*>", text)
    base = f'<base href="{page.parent.resolve().as_uri()}/">'
    at = head.end() if head else 0
    tmp.mkdir(parents=True, exist_ok=True)
    copy = tmp / page.name
    copy.write_text(text[:at] + base + _PROBE + text[at:], encoding="utf-8")
    result = subprocess.run(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--allow-file-access-from-files",
            "--virtual-time-budget=10000",
            "--dump-dom",
            copy.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _broken_links(page: Path, dom: str) -> list[str]:
    ids = set(re.findall(r'\sid="([^"]+)"', dom))
    broken = []
    for href in re.findall(r'<a\s[^>]*href="([^"]*)"', dom):
        href = html.unescape(href)
        parts = urlsplit(href)
        if parts.scheme in ("http", "https", "mailto", "data", "javascript"):
            continue  # no network in CI; external links are not checked
        if not parts.path:
            if parts.fragment and parts.fragment not in ids:
                broken.append(href)
            continue
        target = (page.parent / unquote(parts.path)).resolve()
        if parts.scheme == "file":
            target = Path(unquote(parts.path))
        if not target.exists():
            broken.append(href)
    return broken


def test_there_are_reports():
    assert (REPORTS / "index.html").is_file() and len(PAGES) > 1


def page_problems(chromium: str, page: Path, tmp: Path) -> list[str]:
    """What is wrong with ``page`` as rendered (empty when it is clean)."""
    dom = render(chromium, page, tmp)
    probe = re.search(r'data-broken-images="([^"]*)"', dom)
    if probe is None:
        return ["the page did not finish loading"]
    problems = [f"image not shown: {src}" for src in json.loads(html.unescape(probe.group(1)))]
    problems += [f"broken link: {href}" for href in _broken_links(page, dom)]
    problems += [f"stray repr {r!r}" for r in STRAY_REPRS if r in dom]
    if STDERR_BOX in dom:
        problems.append(f"{dom.count(STDERR_BOX)} warning (stderr) box(es)")
    if page.parent.name == "html" and 'href="../index.html"' not in dom:
        problems.append("no link back to the index")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_report_renders_clean(chromium: str, page: Path, tmp_path: Path):
    problems = page_problems(chromium, page, tmp_path / "copy")
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_the_check_catches_each_problem(chromium: str, tmp_path: Path):
    """A page with one instance of every fault, and its clean twin."""
    import base64

    site = tmp_path / "site" / "html"
    site.mkdir(parents=True)
    (site.parent / "index.html").write_text("<html><body></body></html>")
    png = base64.b64encode(
        base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
        )
    ).decode()
    clean = (
        '<html><head></head><body><a href="../index.html">index</a>'
        f'<img src="data:image/png;base64,{png}"><p id="x">ok</p><a href="#x">x</a></body></html>'
    )
    (site / "clean.html").write_text(clean)
    (tmp_path / "copy").mkdir()
    assert page_problems(chromium, site / "clean.html", tmp_path / "copy") == []
    bad = clean.replace('href="../index.html"', 'href="../missing.html"').replace(
        "<p id",
        "<img src=\"nowhere.png\"><pre>PosixPath('a')</pre>"
        f"<div {STDERR_BOX}>TqdmWarning</div><p id",
    )
    (site / "bad.html").write_text(bad)
    found = page_problems(chromium, site / "bad.html", tmp_path / "copy")
    assert any(p.startswith("image not shown: nowhere.png") for p in found), found
    assert "broken link: ../missing.html" in found
    assert "stray repr 'PosixPath('" in found
    assert "1 warning (stderr) box(es)" in found
    assert "no link back to the index" in found
