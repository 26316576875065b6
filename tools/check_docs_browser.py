"""Open built documentation pages in a real headless browser and fail on a blank page or an
image that did not load.

    make -C docs html && python tools/check_docs_browser.py [--html docs/_build/html]
        [--page PATH:MIN_IMAGES ...] [--out DIR] [--browser chromium]

By default it checks the API page of `jaxvi.GaussianMixture` and the gallery page of
examples/em_gmm.py (which must show at least one picture). For each page, headless Chromium
(Debian's `chromium` package; nothing is downloaded):

1. loads a copy of the page with a small script added that, after the load event, records
   every <img>'s `complete` and `naturalWidth` and the length of the page's visible text, and
   prints the DOM (`--dump-dom`): an image with naturalWidth 0 did not load (missing file,
   broken PNG), and a page with almost no text is blank;
2. takes a screenshot of the page itself (`--screenshot`, kept in --out for a person to look
   at) and fails if it is nearly one colour.

Exits 1 naming every failure, 0 with one line per page when all pass.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PAGES = ["api/generated/jaxvi.GaussianMixture.html:0", "gallery/em_gmm.html:1"]
MARKER = "__jaxvi_browser_check__"
PROBE = f"""
<script>
window.addEventListener("load", function () {{
  setTimeout(function () {{
    var images = Array.prototype.map.call(document.images, function (img) {{
      return {{src: img.getAttribute("src"), complete: img.complete,
               width: img.naturalWidth, height: img.naturalHeight}};
    }});
    var pre = document.createElement("pre");
    pre.id = "{MARKER}";
    pre.textContent = JSON.stringify({{title: document.title, images: images,
                                       text: document.body.innerText.length}});
    document.body.appendChild(pre);
  }}, 500);
}});
</script>
"""


def find_browser(name: str | None) -> str:
    for candidate in ([name] if name else ["chromium", "chromium-browser", "google-chrome"]):
        path = shutil.which(candidate)
        if path:
            return path
    sys.exit("no Chromium found: apt-get install -y chromium (or pass --browser)")


def run_browser(browser: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="jaxvi-chromium-") as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--disable-dev-shm-usage", "--no-first-run", "--allow-file-access-from-files",
               f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def probe_dom(browser: str, page: Path) -> dict:
    """Loads a copy of the page (beside it, so relative links resolve) with PROBE added."""
    text = page.read_text(encoding="utf-8")
    if "</body>" not in text:
        raise RuntimeError(f"{page} has no </body>")
    copy = page.with_name(f".{MARKER}{page.name}")
    copy.write_text(text.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
    try:
        result = run_browser(browser, "--dump-dom", copy.as_uri())
    finally:
        copy.unlink()
    m = re.search(rf'<pre id="{MARKER}">(.*?)</pre>', result.stdout, re.S)
    if not m:
        raise RuntimeError(f"the page did not finish loading in the browser "
                           f"(exit {result.returncode}): {result.stderr[-500:]}")
    return json.loads(html.unescape(m.group(1)))


def screenshot(browser: str, page: Path, out: Path) -> dict:
    run_browser(browser, f"--screenshot={out}", "--window-size=1280,1600", page.as_uri())
    if not out.is_file():
        raise RuntimeError("no screenshot was written")
    from PIL import Image

    img = Image.open(out).convert("RGB").resize((320, 400))
    counts = img.getcolors(maxcolors=320 * 400)  # [(count, colour), ...]
    background = max(n for n, _ in counts) / (320 * 400)
    return {"colours": len(counts), "background_fraction": background}


def check_page(browser: str, html_dir: Path, rel: str, min_images: int, out: Path) -> list[str]:
    page = html_dir / rel
    if not page.is_file():
        return [f"{rel}: not built ({page} missing)"]
    problems = []
    dom = probe_dom(browser, page)
    broken = [i["src"] for i in dom["images"] if not i["complete"] or i["width"] == 0]
    loaded = [i for i in dom["images"] if i["complete"] and i["width"] > 0]
    if broken:
        problems.append(f"{rel}: images that did not load: {broken}")
    if len(loaded) < min_images:
        problems.append(f"{rel}: {len(loaded)} images loaded, at least {min_images} expected")
    if dom["text"] < 200:
        problems.append(f"{rel}: blank page ({dom['text']} characters of visible text)")
    shot = out / (rel.replace("/", "_").removesuffix(".html") + ".png")
    stats = screenshot(browser, page, shot)
    if stats["background_fraction"] > 0.995 or stats["colours"] < 8:
        problems.append(f"{rel}: the screenshot is blank ({stats})")
    if not problems:
        sizes = ", ".join(f"{i['width']}x{i['height']}" for i in loaded) or "none"
        print(f"ok  {rel}: title {dom['title']!r}, {dom['text']} characters, images loaded: "
              f"{sizes}; screenshot {shot} ({stats['colours']} colours, "
              f"{100 * (1 - stats['background_fraction']):.0f} % not background)")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--html", type=Path, default=ROOT / "docs" / "_build" / "html")
    p.add_argument("--page", action="append", metavar="PATH:MIN_IMAGES",
                   help=f"a page under --html and how many images it must show "
                        f"(default: {' '.join(DEFAULT_PAGES)})")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "_build" / "browser-check",
                   help="where the screenshots go")
    p.add_argument("--browser", default=None)
    args = p.parse_args(argv)
    browser = find_browser(args.browser)
    args.out.mkdir(parents=True, exist_ok=True)
    problems = []
    for spec in args.page or DEFAULT_PAGES:
        rel, _, n = spec.rpartition(":")
        problems += check_page(browser, args.html.resolve(), rel, int(n), args.out)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
