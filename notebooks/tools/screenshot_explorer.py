"""Open a notebook in JupyterLab in headless Chromium, run all its cells, and save screenshots.

For ``06_explorer`` it also uses the widgets as a reader would: it types another user id into the
user box and looks an item up by its title in the item box, then takes one screenshot of each.
For any other notebook it takes one screenshot at its first figure and one at "What to notice", or,
with ``--at HEADING`` (repeatable), one at each section whose heading contains HEADING. With
``--no-run`` it shows the notebook's stored outputs (an executed copy in ``reports/executed/``); with
``--save`` it saves the notebook at the end, as a reader would (``git status`` stays clean: the git
filter and the server's save hook that ``make install`` sets up)::

    python notebooks/tools/screenshot_explorer.py --notebook notebooks/00_quickstart.ipynb \
        --at "How the DMESR item encoder works"
    python notebooks/tools/screenshot_explorer.py --notebook reports/executed/05_results.ipynb --no-run \
        --at "Where the gain comes from" --at "Main table"

Needs Debian's chromium and chromium-driver (``apt-get install chromium chromium-driver``) and
selenium in any Python environment (``pip install selenium``; not a dependency of dmesr). Start
JupyterLab from the repository root first, on the loopback interface, with a token of your own
(a server without a token gives every local process a shell), and the app exposed so the script
can run commands::

    export JUPYTER_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    .venv/bin/jupyter lab --ip 127.0.0.1 --port 8899 --no-browser --LabApp.expose_app_in_browser=True &
    python notebooks/tools/screenshot_explorer.py --notebook notebooks/06_explorer.ipynb --out reports/figures

(``jupyter lab`` reads the token from ``$JUPYTER_TOKEN``; as root add ``--allow-root``.)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from urllib.parse import quote

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

# Chromium as root in a container, with no network beyond localhost.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1500,1900"]


def wait_until(driver, script: str, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if driver.execute_script(script):
            return
        time.sleep(1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_all_cells(driver, timeout: float) -> None:
    wait_until(driver, "return !!(window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell'))",
               120, "JupyterLab and the notebook")
    wait_until(driver, "return document.querySelector('.jp-Notebook-ExecutionIndicator, .jp-KernelStatus') "
                       "!== null", 60, "the kernel")
    time.sleep(5)
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # done when no code cell shows the running prompt "[*]" and the last one has an execution count
    wait_until(driver, """
        const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent);
        return prompts.length > 0 && !prompts.some(p => p.includes('*')) && /\\d/.test(prompts[prompts.length - 1]);
    """, timeout, "all cells to run")
    time.sleep(3)
    for button in driver.find_elements(By.XPATH, "//button[normalize-space()='No']"):
        button.click()  # JupyterLab's "get notified about news?" toast


def save_notebook(driver) -> None:
    """Save the notebook as a reader does (File > Save) and wait until the server has written it."""
    driver.execute_script("window.jupyterapp.commands.execute('docmanager:save')")
    wait_until(driver, "const panel = window.jupyterapp.shell.currentWidget; "
                       "return !!(panel && panel.context && !panel.context.model.dirty)", 120, "the save")


def shoot(driver, anchor, path: Path, where: str = "start") -> None:
    driver.execute_script(f"arguments[0].scrollIntoView({{block: '{where}'}})", anchor)
    time.sleep(1)
    driver.save_screenshot(str(path))
    print(f"wrote {path}")


def type_into(driver, box, text: str) -> None:
    """Replace a Combobox's text and commit it (Enter), as a reader picking from the list does."""
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(text, Keys.ENTER)
    time.sleep(4)  # the kernel redraws the output below the widget


def explorer_views(driver, out: Path, stem: str, user: str, item: str) -> None:
    boxes = driver.find_elements(By.CSS_SELECTOR, ".jupyter-widgets input[type='text']")
    if len(boxes) < 2:
        raise RuntimeError("the explorer's user and item boxes did not render; did the cells fail?")
    type_into(driver, boxes[0], user)
    shoot(driver, driver.find_element(By.XPATH, "//h2[contains(normalize-space(), 'Pick a user')]"),
          out / f"{stem}-jupyterlab-user.png")
    type_into(driver, boxes[1], item)
    shoot(driver, driver.find_element(By.XPATH, "//h2[contains(normalize-space(), 'Pick an item')]"),
          out / f"{stem}-jupyterlab-item.png")


def figure_views(driver, out: Path, stem: str) -> None:
    figures = driver.find_elements(By.CSS_SELECTOR, ".jp-RenderedImage img")
    if not figures:
        raise RuntimeError("no figure rendered as an image in the notebook")
    shoot(driver, figures[0], out / f"{stem}-jupyterlab-figure.png", where="center")
    shoot(driver, driver.find_element(By.XPATH, "//h2[contains(normalize-space(), 'What to notice')]"),
          out / f"{stem}-jupyterlab-notice.png")


def section_views(driver, out: Path, stem: str, headings: list[str]) -> None:
    """One screenshot per heading, the section scrolled to the top (``<stem>-jupyterlab-<heading>.png``)."""
    for heading in headings:
        anchor = driver.find_element(By.XPATH, f"//*[self::h2 or self::h3][contains(normalize-space(), '{heading}')]")
        name = "-".join(heading.lower().replace(":", " ").split()[:4])
        shoot(driver, anchor, out / f"{stem}-jupyterlab-{name}.png")


def show_stored_outputs(driver) -> None:
    wait_until(driver, "return !!(window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell'))",
               120, "JupyterLab and the notebook")
    time.sleep(8)  # the stored outputs render
    for button in driver.find_elements(By.XPATH, "//button[normalize-space()='No']"):
        button.click()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8899")
    parser.add_argument("--token", default=os.environ.get("JUPYTER_TOKEN"),
                        help="the server's token (default: $JUPYTER_TOKEN)")
    parser.add_argument("--notebook", default="notebooks/06_explorer.ipynb")
    parser.add_argument("--out", type=Path, default=Path("reports/figures"))
    parser.add_argument("--user", default="42", help="(explorer) the user id typed into the user box")
    parser.add_argument("--item", default="Star Wars [#50]", help="(explorer) the item picked by title")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed for running every cell")
    parser.add_argument("--at", action="append", default=[], metavar="HEADING",
                        help="a screenshot at the section whose heading contains HEADING (repeatable)")
    parser.add_argument("--no-run", action="store_true", help="show the stored outputs; run no cell")
    parser.add_argument("--save", action="store_true", help="save the notebook once its cells have run")
    args = parser.parse_args()
    if not args.token:
        parser.error("no token: pass --token or set JUPYTER_TOKEN (the server must have one)")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    stem = Path(args.notebook).stem
    try:
        driver.get(f"{args.url}/lab/tree/{args.notebook}?reset&token={quote(args.token)}")  # reset: no tabs of an earlier visit
        show_stored_outputs(driver) if args.no_run else run_all_cells(driver, args.timeout)
        args.out.mkdir(parents=True, exist_ok=True)
        if args.at:
            section_views(driver, args.out, stem, args.at)
        elif stem == "06_explorer":
            explorer_views(driver, args.out, stem, args.user, args.item)
        else:
            figure_views(driver, args.out, stem)
        if args.save:
            save_notebook(driver)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
