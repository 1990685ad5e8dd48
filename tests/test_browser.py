"""The demo page in a real headless Chromium, against a real uvicorn on loopback.

Driven by selenium with Debian's `chromium` and `chromium-driver` (`make test-tools`
installs them; `.ci/run` runs it). Without them the test skips with the reason, except in CI (CI=true), where
it fails. MNIST_CODEC_SCREENSHOT=docs/demo.png writes the README's screenshot.
"""

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import DIGITS_DIR, LiveServer
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1000,760",
]
WAIT_S = 20  # for one page event
BOUND_S = 120  # for the whole module: then chromedriver is killed and what is left fails


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        reason = f"{' and '.join(missing)} missing: make test-tools (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI runs the browser test; .ci/run installs them)")
        pytest.skip(reason)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    watchdog = threading.Timer(BOUND_S, driver.service.process.kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield driver
    finally:
        watchdog.cancel()
        driver.quit()


@pytest.fixture
def page(browser: WebDriver, live_server: LiveServer) -> WebDriver:
    browser.get(f"{live_server.url}/")
    WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script("return !!window.mnistDemo"))
    return browser


def wait_for_result(page: WebDriver) -> str:
    """Wait until the page has shown a result; return the status line's state."""
    status = page.find_element(By.ID, "status")
    WebDriverWait(page, WAIT_S).until(lambda _: status.get_attribute("data-state") in ("done", "error"))
    assert status.get_attribute("data-state") == "done", status.text
    return str(status.text)


def test_upload_shows_the_files_24_bytes_and_its_reconstruction(page: WebDriver, live_server: LiveServer) -> None:
    digit = DIGITS_DIR / "test0000_digit7.png"
    page.find_element(By.ID, "upload").send_keys(str(digit))
    wait_for_result(page)
    expected = httpx.post(f"{live_server.url}/encode", files={"img": digit.read_bytes()}, timeout=10)
    shown = page.find_element(By.ID, "hex").text.replace(" ", "")
    assert bytes.fromhex(shown) == expected.content  # the very bytes the API gives for this file
    assert page.find_element(By.ID, "model-id").text == expected.headers["x-model-id"]
    assert page.execute_script("return document.getElementById('recon').naturalWidth") == 28
    psnr = float(page.find_element(By.ID, "psnr").text.removesuffix(" dB"))
    assert 14 < psnr < 30  # this digit: about 17 dB, as the quality test measures


def test_drawing_is_sampled_the_mnist_way_and_round_tripped(page: WebDriver) -> None:
    pad = page.find_element(By.ID, "pad")
    stroke = ActionChains(page).move_to_element_with_offset(pad, -80, -90).click_and_hold()
    for dx, dy in [(40, 0), (40, 0), (40, 0), (-10, 40), (-15, 45), (-15, 45), (-10, 40)]:  # a "7"
        stroke = stroke.move_by_offset(dx, dy)
    stroke.release().perform()
    wait_for_result(page)
    assert len(page.find_element(By.ID, "hex").text.replace(" ", "")) == 48
    # The 28x28 input: ink inside a 20x20 box, its centre of mass near the frame's centre.
    ink = page.execute_script(
        """const d = document.getElementById('input28').getContext('2d').getImageData(0, 0, 28, 28).data;
        let m = 0, x = 0, y = 0, x0 = 28, x1 = -1, y0 = 28, y1 = -1;
        for (let i = 0; i < 784; i++) {
          const v = d[4 * i], px = i % 28, py = Math.floor(i / 28);
          if (v > 0) { x0 = Math.min(x0, px); x1 = Math.max(x1, px); y0 = Math.min(y0, py); y1 = Math.max(y1, py); }
          m += v; x += v * px; y += v * py;
        }
        return {w: x1 - x0 + 1, h: y1 - y0 + 1, cx: x / m, cy: y / m};"""
    )
    assert max(ink["w"], ink["h"]) == 20
    assert abs(ink["cx"] - 13.5) <= 1 and abs(ink["cy"] - 13.5) <= 1
    if screenshot := os.environ.get("MNIST_CODEC_SCREENSHOT"):
        page.save_screenshot(screenshot)


def test_an_unreadable_upload_is_reported(page: WebDriver, tmp_path: Path) -> None:
    not_png = tmp_path / "fake.png"
    not_png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # a PNG signature, then garbage
    page.find_element(By.ID, "upload").send_keys(str(not_png))
    status = page.find_element(By.ID, "status")
    WebDriverWait(page, WAIT_S).until(lambda _: status.get_attribute("data-state") == "error")
    assert status.text.startswith("cannot read fake.png")
