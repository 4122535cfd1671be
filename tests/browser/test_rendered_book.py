"""The built book, opened page by page in headless Chromium from a server on 127.0.0.1.

Fails on a blank page, a missing image, an image without alt text, math that MathJax did not typeset, or a
console error; a page that only forwards to another (``index.html``) must forward to a page of the book.
Also checks what a reader clicks: every chapter's Colab launch button points at that
chapter's notebook in the repository of ``_config.yml``, the search page finds "CFL", and a hidden
cell opens when its toggle is clicked.
At a 1280 px window no code line, printed output or output table is wider than the box it is shown in
(folded cells opened first), and the front pages (introduction, ledger, chapter 6) are saved whole.
Needs ``_build/html`` (``jupyter-book build .``) and Debian's ``chromium`` and ``chromium-driver``;
``scripts/test.sh`` provides all three. A screenshot of every page goes to ``_build/screenshots``, and
of the front pages at their full length to ``_build/screenshots/full-1280px``.
"""

from __future__ import annotations

import base64
import functools
import http.server
import posixpath
import re
import shutil
import threading
from pathlib import Path

import pytest
import yaml

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402 - after the import check

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
SKIP_DIRS = {"_static", "_sources", "_images", "_sphinx_design_static"}
PAGES = sorted(
    p.relative_to(HTML).as_posix()
    for p in HTML.rglob("*.html")
    if not SKIP_DIRS & set(p.relative_to(HTML).parts)
) if HTML.exists() else []

WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
if (!window.MathJax || !MathJax.startup) { done("no MathJax"); return; }
MathJax.startup.promise.then(() => done("ok"), (e) => done("MathJax failed: " + e));
"""

PAGE_REPORT = r"""
const imgs = Array.from(document.images);
const math = Array.from(document.querySelectorAll(".math"));
return {
  text: document.body.innerText.trim().length,
  brokenImages: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
  math: math.length,
  untypeset: math.filter(m => !m.querySelector("mjx-container")).map(m => m.textContent.slice(0, 80)),
  mathErrors: document.querySelectorAll("mjx-merror").length,
  noAlt: Array.from(document.querySelectorAll("main img"))
    .filter(i => !i.alt || /\.(png|jpe?g|svg)$/i.test(i.alt.trim())).map(i => i.src),
};
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").exists():
        pytest.fail(f"no built book in {HTML}: run `jupyter-book build .` first")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver_path):
        pytest.fail("headless Chromium needs Debian's chromium and chromium-driver (scripts/test.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--no-first-run", "--window-size=1280,2000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(60)
    driver.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def test_the_book_has_pages():
    assert "chapters/01-heat-cfl.html" in PAGES, f"missing chapter pages in {HTML}"


REDIRECT = re.compile(r'<meta http-equiv="Refresh" content="0; url=([^"]+)"', re.IGNORECASE)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders(server, browser, page):
    redirect = REDIRECT.match((HTML / page).read_text(encoding="utf-8").strip())
    if redirect:   # a page that only forwards (index.html): its target must exist; it is checked itself
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page), redirect.group(1)))
        assert target in PAGES, f"{page} forwards to {redirect.group(1)}, which is not in the book"
        return
    browser.get_log("browser")  # forget what earlier pages logged
    browser.get(f"{server}/{page}")
    mathjax = browser.execute_async_script(WAIT_FOR_MATHJAX)
    report = browser.execute_script(PAGE_REPORT)
    browser.save_screenshot(str(SHOTS / (page.replace("/", "__").removesuffix(".html") + ".png")))
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert report["text"] > 100, f"{page} is blank"
    assert not report["brokenImages"], f"{page}: images did not load: {report['brokenImages']}"
    assert not report["noAlt"], f"{page}: images without alt text: {report['noAlt']}"
    if report["math"]:
        assert mathjax == "ok", f"{page}: {mathjax}"
        assert not report["untypeset"], f"{page}: math not typeset: {report['untypeset'][:3]}"
        assert report["mathErrors"] == 0, f"{page}: MathJax reported errors"
    assert not errors, f"{page}: console errors: {errors}"


CHAPTERS = [p for p in PAGES if p.startswith("chapters/")]


def _colab_url(page: str) -> str:
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    owner_name = repo["url"].removeprefix("https://github.com/")
    notebook = page.removesuffix(".html") + ".ipynb"
    return f"https://colab.research.google.com/github/{owner_name}/blob/{repo['branch']}/{notebook}"


@pytest.mark.parametrize("page", CHAPTERS)
def test_colab_button_opens_this_chapter(server, browser, page):
    browser.get(f"{server}/{page}")
    links = {a.get_attribute("href") for a in browser.find_elements("css selector", "a[href*='colab.research.google.com']")}
    assert links == {_colab_url(page)}, f"{page}: Colab links {links}"
    assert (ROOT / page.removesuffix(".html")).with_suffix(".ipynb").exists()


def test_search_finds_cfl(server, browser):
    browser.get(f"{server}/search.html?q=CFL")
    found = browser.execute_async_script("""
const done = arguments[arguments.length - 1];
const t0 = Date.now();
(function poll() {
  const hits = Array.from(document.querySelectorAll("#search-results li a")).map(a => a.getAttribute("href"));
  if (hits.length || Date.now() - t0 > 30000) { done(hits); } else { setTimeout(poll, 200); }
})();""")
    assert any("01-heat-cfl" in href for href in found), f"searching CFL found {found}"


@pytest.mark.parametrize("page", CHAPTERS[:1])
def test_hidden_cell_opens(server, browser, page):
    browser.get(f"{server}/{page}")
    hidden = browser.find_elements("css selector", "details.hide")
    assert hidden, f"{page}: no hidden cell to toggle"
    details = hidden[0]
    assert not details.get_property("open")
    summary = details.find_element("css selector", "summary")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", summary)
    WebDriverWait(browser, 10).until(lambda b: b.execute_script("return document.readyState") == "complete")
    summary.click()
    WebDriverWait(browser, 5).until(
        lambda b: details.get_property("open"), f"{page}: the toggle did not open the hidden cell"
    )
    code = details.find_element("css selector", "pre")
    WebDriverWait(browser, 5).until(lambda b: code.is_displayed(), f"{page}: the opened cell is not shown")
    assert "pdeeos" in code.text


TABLES_OUTSIDE = """
const article = document.querySelector("article") || document.querySelector("main");
const limit = Math.min(article.getBoundingClientRect().right, document.documentElement.clientWidth);
return Array.from(article.querySelectorAll("table"))
  .filter(t => t.getBoundingClientRect().right > limit + 1 || t.scrollWidth > t.clientWidth + 1)
  .map(t => t.innerText.replace(/\\s+/g, " ").slice(0, 60));
"""

VERDICTS_OUTSIDE = """
const width = document.documentElement.clientWidth;
const rows = Array.from(document.querySelectorAll("table.ledger tbody tr"));
return {rows: rows.length, outside: rows.filter(r => {
  const cell = r.cells[0].getBoundingClientRect();
  return cell.left < 0 || cell.right > width || !r.cells[0].querySelector(".sd-badge");
}).map(r => r.innerText.slice(0, 60))};
"""


@pytest.mark.parametrize("page", PAGES)
def test_no_table_overflows_its_column(server, browser, page):
    """At 1280 px every table (the ledger's, every chapter's data frames) fits inside the page's
    content column: no last column cut off, no horizontal scrolling."""
    browser.set_window_size(1280, 2000)
    browser.get(f"{server}/{page}")
    assert browser.execute_script(TABLES_OUTSIDE) == [], f"{page}: tables wider than the page"


@pytest.mark.parametrize("width", [1280, 1400])
def test_every_ledger_verdict_is_visible(server, browser, width):
    browser.set_window_size(width, 2000)
    browser.get(f"{server}/book/ledger.html")
    report = browser.execute_script(VERDICTS_OUTSIDE)
    browser.save_screenshot(str(SHOTS / f"ledger-{width}px.png"))
    assert report["rows"] >= 20 and report["outside"] == [], report
    browser.set_window_size(1280, 2000)


CLIPPED = r"""
// Open every folded cell, then report each code block, printed output and output box whose content
// is wider than the box itself (scrollWidth > clientWidth): a line cut off, or hidden behind a scrollbar.
document.querySelectorAll("details").forEach(d => { d.open = true; });
const article = document.querySelector("article") || document.querySelector("main");
const boxes = new Set(article.querySelectorAll(
  "pre, div.cell_input, div.cell_output, div.cell_output > div.output, div.cell_output table"));
const widest = (el) => {
  const lines = el.innerText.split("\n");
  return lines.reduce((a, b) => (b.length > a.length ? b : a), "").trim().slice(0, 100);
};
return Array.from(boxes)
  .filter(el => el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
  .filter(el => !Array.from(boxes).some(inner => inner !== el && el.contains(inner)
                                       && inner.clientWidth > 0 && inner.scrollWidth > inner.clientWidth + 1))
  .map(el => ({box: el.tagName.toLowerCase() + "." + (el.className || "").split(" ")[0],
               over: el.scrollWidth - el.clientWidth, width: el.clientWidth, line: widest(el)}));
"""


SPLIT_WORDS = r"""
// Every table cell's words, each checked for a line break inside it: a number such as 1.515e-14 drawn as
// "1.515e-" over "14" was squeezed into a column too narrow for it. A break after a dash ("0.05–" over
// "0.09") or after a hyphen before a letter ("global-" over "cfl", "4-" over "layer") is allowed.
const article = document.querySelector("article") || document.querySelector("main");
const split = [];
for (const cell of article.querySelectorAll("table td, table th")) {
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const word of node.textContent.matchAll(/\S{2,}/g)) {
      const tops = [];
      for (let i = 0; i < word[0].length; i++) {
        const range = document.createRange();
        range.setStart(node, word.index + i);
        range.setEnd(node, word.index + i + 1);
        const rect = range.getClientRects()[0];
        tops.push(rect ? Math.round(rect.top) : null);
      }
      for (let i = 1; i < tops.length; i++) {
        if (tops[i] === null || tops[i - 1] === null || tops[i] <= tops[i - 1]) continue;
        const w = word[0];
        if ("–—".includes(w[i - 1]) || (w[i - 1] === "-" && /\p{L}/u.test(w[i]))) continue;
        split.push(w.slice(0, i) + " | " + w.slice(i));
        break;
      }
    }
  }
}
return split.slice(0, 20);
"""


@pytest.mark.parametrize("page", PAGES)
def test_no_number_is_split_in_a_table(server, browser, page):
    """At 1280 px no word or number in a table cell (the ledger's, a chapter's data frame) is broken
    across two lines: the columns are wide enough for their longest word, or the table is narrower."""
    if REDIRECT.match((HTML / page).read_text(encoding="utf-8").strip()):
        return
    browser.set_window_size(1280, 2000)
    browser.get(f"{server}/{page}")
    split = browser.execute_script(SPLIT_WORDS)
    assert split == [], f"{page}: words broken inside a table cell at 1280 px: {split}"


@pytest.mark.parametrize("page", PAGES)
def test_no_code_or_output_is_clipped(server, browser, page):
    """At a 1280 px window every code line (folded cells opened), every printed line and every output
    table fits the box it is drawn in: nothing the reader needs sits behind a horizontal scrollbar."""
    if REDIRECT.match((HTML / page).read_text(encoding="utf-8").strip()):
        return
    browser.set_window_size(1280, 2000)
    browser.get(f"{server}/{page}")
    browser.execute_async_script(WAIT_FOR_MATHJAX)
    clipped = browser.execute_script(CLIPPED)
    assert clipped == [], f"{page}: content wider than its box at 1280 px: " + "; ".join(
        f"{c['box']} by {c['over']} px of {c['width']}: {c['line']!r}" for c in clipped)


FRONT_PAGES = ["book/intro.html", "book/ledger.html", "chapters/06-perturbed-sgd.html"]


@pytest.mark.parametrize("page", FRONT_PAGES)
def test_front_page_screenshot(server, browser, page):
    """The pages a reader in a hurry opens, saved whole at 1280 px (``_build/screenshots/full-1280px``)."""
    browser.set_window_size(1280, 2000)
    browser.get(f"{server}/{page}")
    browser.execute_async_script(WAIT_FOR_MATHJAX)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    # The page laid out in a 1280 px wide viewport as tall as the page, then captured as it is: a clip
    # beyond the viewport would capture a page laid out for another width.
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    out = SHOTS / "full-1280px" / (page.replace("/", "__").removesuffix(".html") + ".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    assert out.stat().st_size > 10_000, f"{page}: empty screenshot"
