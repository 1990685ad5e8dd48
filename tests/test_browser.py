"""The demo page in a real headless Chromium, against a real uvicorn on loopback.

Driven by selenium with Debian's `chromium` and `chromium-driver` (`make test-tools`
installs them; `.ci/run` runs it). Without them the test skips with the reason, except in CI (CI=true), where
it fails. MNIST_CODEC_SCREENSHOT=docs/demo.png writes the README's screenshot.
"""

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import DIGITS_DIR, LiveServer
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

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


NO_BROKEN_IMAGE = "return Array.from(document.images).every((i) => i.complete && i.naturalWidth > 0)"


def current_models(server: LiveServer) -> list[dict[str, Any]]:
    """GET /models' entries of the versions the names mean: the page shows one card for each."""
    return [m for m in httpx.get(f"{server.url}/models", timeout=10).json()["models"] if m["current"]]


def card(page: WebDriver, name: str) -> dict[str, str]:
    """What the page shows for one model: its texts by class name."""
    keys = ("values-label", "values", "hex", "model-id", "size", "psnr", "effort-used")
    return {key: page.find_element(By.CSS_SELECTOR, f'[data-model="{name}"] .{key}').text for key in keys}


def test_before_any_input_there_is_a_slot_per_model_and_no_broken_image(
    page: WebDriver, live_server: LiveServer
) -> None:
    listed = httpx.get(f"{live_server.url}/models", timeout=10).json()["models"]
    names = [m["name"] for m in current_models(live_server)]
    assert len(listed) == 4 and len(names) == 3  # ec64 v1 and v2 served; the page shows the one `ec64` means
    WebDriverWait(page, WAIT_S).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure.model")) == len(names))
    shown = [f.get_attribute("data-model") for f in page.find_elements(By.CSS_SELECTOR, "figure.model")]
    assert shown == names == ["mlp6", "mlp24", "ec64"]
    captions = [
        f.find_element(By.CSS_SELECTOR, ".name").text for f in page.find_elements(By.CSS_SELECTOR, "figure.model")
    ]
    assert captions == names
    assert page.execute_script(NO_BROKEN_IMAGE)
    assert "NaN" not in page.find_element(By.TAG_NAME, "body").text


def test_upload_shows_every_models_latent_in_its_own_format(page: WebDriver, live_server: LiveServer) -> None:
    digit = DIGITS_DIR / "test0000_digit7.png"
    page.find_element(By.ID, "upload").send_keys(str(digit))
    wait_for_result(page)
    models = current_models(live_server)
    for model in models:
        name = model["name"]
        expected = httpx.post(f"{live_server.url}/encode?model={name}", files={"img": digit.read_bytes()}, timeout=10)
        shown = card(page, name)
        assert bytes.fromhex(shown["hex"].replace(" ", "")) == expected.content, name  # the very bytes of the API
        assert shown["model-id"] == expected.headers["x-model-id"] == model["id"]  # the version the name means
        assert shown["size"] == "24 bytes"
        assert "NaN" not in shown["values"] and "Infinity" not in shown["values"]
        if model["latent_format"]["name"] == "24xu8":
            assert shown["values-label"] == "as 24 uint8 (24xu8)"
            assert [int(v) for v in shown["values"].split()] == list(expected.content)
        elif model["latent_format"]["name"] == "24xac":  # an arithmetic code: only its bytes mean anything
            assert shown["values-label"] == shown["values"] == ""  # hidden: the hex line says it all
            assert (
                page.find_element(By.CSS_SELECTOR, f'[data-model="{name}"] .hex-label').text == "24xac coded bytes, hex"
            )
        else:
            assert shown["values-label"] == "as 6 float32 (6xf32le)"
            floats = np.frombuffer(expected.content, "<f4")
            assert np.allclose([float(v) for v in shown["values"].split()], floats, atol=1e-4)
        psnr = float(shown["psnr"].removesuffix(" dB"))
        assert psnr == pytest.approx(model["test_psnr_db"], abs=6), name  # this digit, near the model's mean
    # Each reconstruction was drawn: not the black canvas it starts as.
    lit = page.execute_script(
        """return Array.from(document.querySelectorAll('figure.model canvas.recon'), (c) => {
             const d = c.getContext('2d').getImageData(0, 0, 28, 28).data;
             let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s; });"""
    )
    assert len(lit) == len(models) and all(total > 0 for total in lit)
    assert page.execute_script(NO_BROKEN_IMAGE)
    assert "NaN" not in page.find_element(By.TAG_NAME, "body").text


def test_a_format_the_page_does_not_know_is_shown_as_hex(page: WebDriver) -> None:
    """The entropy-coded model to come: its coded bytes, never a misread number."""
    view = page.execute_script("return window.mnistDemo.latentView(new Uint8Array([0, 1, 254, 255, 16]), 'ec24-ans');")
    assert view == {"label": "ec24-ans: coded bytes", "text": "0001feff 10", "coded": True}


def test_drawing_is_sampled_the_mnist_way_and_round_tripped(page: WebDriver) -> None:
    pad = page.find_element(By.ID, "pad")
    stroke = ActionChains(page).move_to_element_with_offset(pad, -80, -90).click_and_hold()
    for dx, dy in [(40, 0), (40, 0), (40, 0), (-10, 40), (-15, 45), (-15, 45), (-10, 40)]:  # a "7"
        stroke = stroke.move_by_offset(dx, dy)
    stroke.release().perform()
    wait_for_result(page)
    assert len(card(page, "mlp6")["hex"].replace(" ", "")) == 48
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


def test_each_model_has_an_effort_selector_and_its_level_is_used_and_shown(
    page: WebDriver, live_server: LiveServer
) -> None:
    models = current_models(live_server)
    WebDriverWait(page, WAIT_S).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "select.effort")) == len(models))
    for model in models:
        select = Select(page.find_element(By.CSS_SELECTOR, f'figure.model[data-model="{model["name"]}"] select.effort'))
        assert [o.get_attribute("value") for o in select.options] == [str(e["level"]) for e in model["efforts"]]
        assert select.first_selected_option.get_attribute("value") == str(model["default_effort"])
        for option, effort in zip(select.options, model["efforts"], strict=True):
            if effort["psnr_db"] is not None:
                assert option.text == f"{effort['level']} · {effort['psnr_db']:.2f} dB"
            if effort["us_per_digit"] is not None:
                assert "per digit" in option.get_attribute("title")
    digit = DIGITS_DIR / "test0000_digit7.png"
    page.find_element(By.ID, "upload").send_keys(str(digit))
    wait_for_result(page)
    for model in models:  # first, each at its default level, shown by the result
        assert card(page, model["name"])["effort-used"] == f"effort {model['default_effort']}"
    status = page.find_element(By.ID, "status")
    for model in models:  # then each at its highest level: the very bytes /encode?effort=N gives
        name, top = model["name"], model["efforts"][-1]["level"]
        Select(page.find_element(By.CSS_SELECTOR, f'figure.model[data-model="{name}"] select.effort')).select_by_value(
            str(top)
        )
        WebDriverWait(page, WAIT_S).until(
            lambda _, n=name, t=top: (
                status.text == f"{n} at effort {t}: 24 bytes out." or status.get_attribute("data-state") == "error"
            )
        )
        assert status.get_attribute("data-state") == "done", status.text
        expected = httpx.post(
            f"{live_server.url}/encode?model={name}&effort={top}", files={"img": digit.read_bytes()}, timeout=30
        )
        shown = card(page, name)
        assert bytes.fromhex(shown["hex"].replace(" ", "")) == expected.content, name
        assert shown["effort-used"] == f"effort {top}"
        assert float(shown["psnr"].removesuffix(" dB")) > 0
    assert "NaN" not in page.find_element(By.TAG_NAME, "body").text


def test_an_unreadable_upload_is_reported(page: WebDriver, tmp_path: Path) -> None:
    not_png = tmp_path / "fake.png"
    not_png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # a PNG signature, then garbage
    page.find_element(By.ID, "upload").send_keys(str(not_png))
    status = page.find_element(By.ID, "status")
    WebDriverWait(page, WAIT_S).until(lambda _: status.get_attribute("data-state") == "error")
    assert status.text.startswith("cannot read fake.png")


BLACK = """return Array.from(document.querySelectorAll('#input28, figure.model canvas.recon'), (c) => {
     const d = c.getContext('2d').getImageData(0, 0, 28, 28).data;
     let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s === 0; });"""


def shown_hex(page: WebDriver) -> list[str]:
    return [e.text.strip() for e in page.find_elements(By.CSS_SELECTOR, ".latent .hex")]


def test_clear_removes_the_results_and_the_same_file_can_be_chosen_again(page: WebDriver) -> None:
    digit = DIGITS_DIR / "test0000_digit7.png"
    page.find_element(By.ID, "upload").send_keys(str(digit))
    wait_for_result(page)
    first = shown_hex(page)
    assert all(len(h.replace(" ", "")) == 48 for h in first)
    page.find_element(By.ID, "clear").click()
    assert shown_hex(page) == ["", "", ""]  # no latent of the cleared digit left
    assert all(page.execute_script(BLACK))  # nor its input or reconstructions
    assert all(e.text == "" for e in page.find_elements(By.CSS_SELECTOR, "figure.model .psnr"))
    assert page.find_element(By.ID, "status").text == "Draw a digit to start."
    page.find_element(By.ID, "upload").send_keys(str(digit))  # the same file: still a change
    wait_for_result(page)
    assert shown_hex(page) == first


def test_an_error_is_shown_next_to_the_input_and_clears_stale_results(page: WebDriver, tmp_path: Path) -> None:
    page.set_window_size(1280, 1000)
    try:
        page.find_element(By.ID, "upload").send_keys(str(DIGITS_DIR / "test0000_digit7.png"))
        wait_for_result(page)
        text_file = tmp_path / "notes.png"
        text_file.write_text("not a PNG at all\n")
        page.find_element(By.ID, "upload").send_keys(str(text_file))
        shown = page.find_element(By.ID, "input-error")
        WebDriverWait(page, WAIT_S).until(lambda _: shown.is_displayed())
        assert "notes.png" in shown.text
        panel = page.find_element(By.CSS_SELECTOR, '.panel[aria-label="input"]').rect
        box = shown.rect
        assert panel["y"] <= box["y"] and box["y"] + box["height"] <= panel["y"] + panel["height"]  # by the input
        assert box["y"] + box["height"] <= page.execute_script("return window.innerHeight")  # above the fold
        assert shown_hex(page) == ["", "", ""] and all(page.execute_script(BLACK))  # the old digit's results gone
        page.find_element(By.ID, "upload").send_keys(str(DIGITS_DIR / "test0001_digit2.png"))
        wait_for_result(page)
        assert not shown.is_displayed()
    finally:
        page.set_window_size(1000, 760)


def upload_at(page: WebDriver, width: int, height: int) -> None:
    page.set_window_size(width, height)
    page.find_element(By.ID, "upload").send_keys(str(DIGITS_DIR / "test0000_digit7.png"))
    wait_for_result(page)


HEX_GROUPS_WHOLE = """return Array.from(document.querySelectorAll('.latent .hex'), (code) => {
     const node = code.firstChild, text = node.textContent; let at = 0;
     return text.split(' ').every((group) => {
       const range = document.createRange();
       range.setStart(node, at); range.setEnd(node, at + group.length); at += group.length + 1;
       return new Set(Array.from(range.getClientRects(), (r) => Math.round(r.top))).size === 1;
     });
   });"""


def test_at_1280_px_the_model_tiles_fit_one_row(page: WebDriver, tmp_path: Path) -> None:
    try:
        upload_at(page, 1280, 1000)
        tops = {f.rect["y"] for f in page.find_elements(By.CSS_SELECTOR, "#strip figure")}
        assert len(tops) == 1, tops  # the input and every model on one row
        page.save_screenshot(str(tmp_path / "demo-1280.png"))
        if screenshot := os.environ.get("MNIST_CODEC_SCREENSHOT_1280"):
            page.save_screenshot(screenshot)
    finally:
        page.set_window_size(1000, 760)


def test_the_hex_breaks_only_between_byte_groups(page: WebDriver) -> None:
    try:
        upload_at(page, 480, 900)  # narrow: every hex line has to wrap
        lines = page.execute_script(
            "return Array.from(document.querySelectorAll('.latent .hex'), (c) => c.getClientRects().length)"
        )
        assert all(count >= 1 for count in lines)
        assert all(page.execute_script(HEX_GROUPS_WHOLE)), page.execute_script(HEX_GROUPS_WHOLE)
    finally:
        page.set_window_size(1000, 760)


def test_ec64s_coded_bytes_are_shown_once(page: WebDriver) -> None:
    upload_at(page, 1000, 760)
    ec64 = page.find_element(By.CSS_SELECTOR, '.latent[data-model="ec64"]')
    hex_text = ec64.find_element(By.CSS_SELECTOR, ".hex").text
    assert len(hex_text.replace(" ", "")) == 48
    assert ec64.text.count(hex_text) == 1, ec64.text  # not a second line of the same bytes


def test_docs_serves_swagger_ui_from_the_package(browser: WebDriver, live_server: LiveServer) -> None:
    """No request leaves the server: a machine without internet still gets the docs."""
    browser.get(f"{live_server.url}/docs")
    WebDriverWait(browser, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
    assert "mnist-codec" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    WebDriverWait(browser, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert loaded and all(url.startswith(live_server.url) for url in loaded), loaded
    html = httpx.get(f"{live_server.url}/docs", timeout=10).text
    assert "cdn" not in html.lower() and "/static/swagger-ui/swagger-ui-bundle.js" in html
