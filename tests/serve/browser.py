"""fkp serve in a real browser: Debian's Chromium driven through chromedriver by
Selenium. Run by tests/serve.rs (the_page_works_in_chromium) against a server it
started on a workspace with pipelines a, b (both run; b's description carries a
<script> payload) and live (not run: this script starts its training).

Checks: the overview lists the pipelines with their states; the payload shows as
text and never runs; a training started in another process makes the curve's
point count grow without a reload; sorting the comparison by RMSE reorders its
rows; a face opens with its keypoints drawn; a screenshot is not blank.
"""

import argparse
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

PATIENCE = 120.0


def wait(what, check, timeout=PATIENCE):
    deadline = time.time() + timeout
    last_error = None
    while True:
        try:
            value = check()
        except Exception as error:  # the page is between renders
            value, last_error = None, error
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("waited %.0f s for %s (last error: %r)" % (timeout, what, last_error))
        time.sleep(0.1)


def browser(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1400,1000", "--user-data-dir=" + profile,
    ]:
        options.add_argument(argument)
    # The driver Debian installs: Selenium Manager downloads nothing.
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def distinct_grey_levels(png):
    """How many different bytes the decoded pixel rows hold (a blank page: 1-2)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, data = 8, b""
    while position < len(png):
        length, kind = struct.unpack(">I4s", png[position:position + 8])
        if kind == b"IDAT":
            data += png[position + 8:position + 8 + length]
        position += 12 + length
    return len(set(zlib.decompress(data)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--fkp", required=True)
    parser.add_argument("--workspace", required=True)
    args = parser.parse_args()
    # Chromium's profile, removed with everything in it when the checks end.
    with tempfile.TemporaryDirectory(prefix="fkp-chromium-", ignore_cleanup_errors=True) as profile:
        return check(args, browser(profile))


def check(args, driver):
    training = None

    def click(selector):
        """Clicks the first element matching selector, finding it again if a redraw replaced it."""
        wait("a click on " + selector, lambda: driver.find_element(By.CSS_SELECTOR, selector).click() or True)

    try:
        driver.get(args.url)
        # (read in one script each: the page redraws as it polls, and an element
        # found in one call may be gone by the next)
        names = lambda: driver.execute_script(
            "return [...document.querySelectorAll('#overview tbody tr')].map((r) => r.dataset.pipeline)")
        wait("the overview's rows a, b, live", lambda: names() == ["a", "b", "live"])
        states = lambda name: driver.execute_script(
            "return [...document.querySelectorAll('tr[data-pipeline=\"' + arguments[0] + '\"] .badge')]"
            ".map((b) => b.dataset.state)", name)
        assert set(states("a")) == {"cached"}, states("a")
        # (live shares a's ingest and prepare)
        assert states("live") == ["cached", "cached", "missing", "missing"], states("live")
        description = driver.execute_script(
            "return document.querySelector('tr[data-pipeline=\"b\"] td:nth-child(3)').textContent")
        assert "<script>window.__pwned=1</script>" in description, description
        assert driver.execute_script("return window.__pwned") is None, "the payload ran"
        print("overview: pipelines and states listed; the <script> payload shows as text")

        # A training in another process; the page follows it without a reload.
        driver.get(args.url + "#/pipeline/live")
        wait("the live pipeline's page", lambda: driver.find_element(By.ID, "curve-rmse"))
        driver.execute_script("window.__sameDocument = true")
        training = subprocess.Popen(
            [args.fkp, "run", "pipelines/live.toml"], cwd=args.workspace,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        points = lambda: int(driver.execute_script("return document.getElementById('curve-rmse').dataset.points"))
        first = wait("a first epoch on the curve", lambda: points() >= 1 and points())
        wait("more epochs on the curve", lambda: points() >= first + 2)
        assert driver.execute_script("return window.__sameDocument") is True, "the page reloaded"
        progress = driver.execute_script("return document.querySelector('div.run').textContent")
        assert "epoch" in progress, progress
        print("live: the curve grew from %d to %d points without a reload (%s)" % (first, points(), progress))
        training.send_signal(signal.SIGTERM)
        training.wait(timeout=PATIENCE)
        wait("the cancelled state", lambda: "cancelled" in driver.execute_script("return document.querySelector('div.run').textContent"))
        print("live: the cancelled run shows as cancelled")

        # Sorting the comparison.
        driver.get(args.url + "#/compare?pipelines=a,b")
        wait("the comparison", lambda: driver.find_element(By.CSS_SELECTOR, 'th[data-key="rmse_px"]'))
        order = lambda: driver.execute_script(
            "return [...document.querySelectorAll('#compare-table tbody tr')].map((r) => r.dataset.pipeline)")
        rmse = lambda: [float(v) for v in driver.execute_script(
            "return [...document.querySelectorAll('#compare-table tbody tr')].map((r) => r.children[5].textContent)")]
        click('th[data-key="rmse_px"]')
        ascending = rmse()
        assert ascending == sorted(ascending), ascending
        first_order = order()
        click('th[data-key="rmse_px"]')
        assert rmse() == sorted(ascending, reverse=True), rmse()
        assert order() == list(reversed(first_order)), (order(), first_order)
        print("compare: sorting by RMSE reorders the rows: %s, then %s" % (first_order, order()))

        # A face with its keypoints.
        driver.get(args.url + "#/faces?a=a")
        def open_face_and_count_keypoints():
            # (opened again if a redraw closed it)
            count = driver.execute_script(
                "const c = document.querySelector('#face-detail canvas'); return c ? c.dataset.keypoints || 0 : null")
            if count is None:
                driver.find_element(By.CSS_SELECTOR, ".face").click()
                return 0
            return int(count)

        drawn = wait("a face opened with its keypoints", open_face_and_count_keypoints)
        print("faces: a face opened with %d predicted keypoints drawn" % drawn)

        driver.get(args.url)
        wait("the overview", lambda: driver.find_elements(By.CSS_SELECTOR, "#overview tbody tr"))
        time.sleep(0.5)
        shot = os.path.join(args.workspace, "serve-overview.png")
        png = driver.get_screenshot_as_png()
        with open(shot, "wb") as out:
            out.write(png)
        levels = distinct_grey_levels(png)
        assert levels > 20, "the screenshot looks blank (%d distinct byte values)" % levels
        print("screenshot: %s, %d distinct byte values" % (shot, levels))
        severe = [entry for entry in driver.get_log("browser")
                  if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]]
        assert not severe, severe
        print("all browser checks passed")
    finally:
        if training and training.poll() is None:
            training.kill()
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
