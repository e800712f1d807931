"""Open 06_explorer in JupyterLab in headless Chromium, run all its cells, and save screenshots.

Needs Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`) and
selenium in any Python environment (`pip install selenium`; not a dependency of dmesr). Start
JupyterLab from the repository root first, with the app exposed so the script can run commands:

    .venv/bin/jupyter lab --allow-root --no-browser --port 8899 --IdentityProvider.token='' \
        --LabApp.expose_app_in_browser=True &
    python notebooks/tools/screenshot_explorer.py --url http://127.0.0.1:8899 --out reports/figures
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

# Chromium as root in a container, with no network beyond localhost (see the env notes).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8899")
    parser.add_argument("--notebook", default="notebooks/06_explorer.ipynb")
    parser.add_argument("--out", type=Path, default=Path("reports/figures"))
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed for running every cell")
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{args.url}/lab/tree/{args.notebook}")
        wait_until(driver, "return !!(window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell'))",
                   120, "JupyterLab and the notebook")
        wait_until(driver, "return document.querySelector('.jp-Notebook-ExecutionIndicator, .jp-KernelStatus') "
                           "!== null", 60, "the kernel")
        time.sleep(5)
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        # done when no cell shows the running prompt "[*]" and the last code cell has an execution count
        wait_until(driver, """
            const prompts = [...document.querySelectorAll('.jp-InputArea-prompt')].map(p => p.textContent);
            return prompts.length > 0 && !prompts.some(p => p.includes('*')) && /\\d/.test(prompts[prompts.length - 1]);
        """, args.timeout, "all cells to run")
        time.sleep(3)
        args.out.mkdir(parents=True, exist_ok=True)
        if not driver.find_elements(By.CSS_SELECTOR, ".jupyter-widgets"):
            raise RuntimeError("no ipywidgets rendered in the notebook; did the cells fail?")
        for button in driver.find_elements(By.XPATH, "//button[normalize-space()='No']"):
            button.click()  # JupyterLab's "get notified about news?" toast
        views = {"user": "//h4[starts-with(normalize-space(), 'Top-10')]",
                 "item": "//*[self::h2 or self::h1][contains(normalize-space(), 'Pick an item')]"}
        for name, xpath in views.items():
            anchor = driver.find_element(By.XPATH, xpath)
            driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", anchor)
            time.sleep(1)
            path = args.out / f"06_explorer-jupyterlab-{name}.png"
            driver.save_screenshot(str(path))
            print(f"wrote {path}")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
