"""Screenshot a report page for the README: `python docs/screenshot.py PAGE.html OUT.png`.

Uses Debian's Chromium through playwright (playwright cannot download its own browser here);
set PATCHBENCH_CHROMIUM to use another binary.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def main(page: str, out: str, width: int = 1200, height: int = 1000) -> None:
    from playwright.sync_api import sync_playwright

    binary = os.environ.get("PATCHBENCH_CHROMIUM") or shutil.which("chromium")
    if not binary:
        sys.exit("screenshot: no Chromium found (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary)
        tab = browser.new_page(viewport={"width": width, "height": height})
        tab.goto(Path(page).resolve().as_uri())
        tab.screenshot(path=out)
        browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
