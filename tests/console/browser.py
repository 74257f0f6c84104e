"""Driving the console: sign in, open a page, wait for what it shows, take screenshots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

#: Where screenshots go: ``IPAM_CONSOLE_SCREENSHOTS=docs/console`` refreshes the README's.
SCREENSHOTS_ENV = "IPAM_CONSOLE_SCREENSHOTS"
WAIT = 30


def wait(driver: Any, css: str, *, text: str | None = None, root: Any = None) -> WebElement:
    """The first element matching ``css`` (containing ``text``) once it is displayed."""

    def found(_: Any) -> WebElement | bool:
        try:
            for element in (root or driver).find_elements(By.CSS_SELECTOR, css):
                shown = element.is_displayed()
                if shown and (text is None or text.lower() in element.text.lower()):
                    return element
        except StaleElementReferenceException:
            return False
        return False

    try:
        result: WebElement = WebDriverWait(driver, WAIT).until(found)
    except TimeoutException:
        shown = driver.execute_script("return document.getElementById('main')?.innerText || ''")
        raise AssertionError(f"no visible {css!r}" + (f" with {text!r}" if text else "")
                             + f"; the page shows:\n{shown[:3000]}") from None
    return result


def gone(driver: Any, css: str) -> None:
    WebDriverWait(driver, WAIT).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, css), message=f"{css!r} still there")


def all_of(driver: Any, css: str, root: Any = None) -> list[WebElement]:
    return list((root or driver).find_elements(By.CSS_SELECTOR, css))


def one(root: Any, css: str) -> WebElement:
    try:
        element: WebElement = root.find_element(By.CSS_SELECTOR, css)
    except NoSuchElementException:
        raise AssertionError(f"no {css!r}") from None
    return element


def sign_in(driver: Any, base: str, token: str, page: str = "pools") -> None:
    """A fresh tab state (no token), then the sign-in form with ``token``."""
    driver.get(f"{base}/console/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{base}/console/#/{page}")
    driver.refresh()
    field = wait(driver, "#token")
    field.clear()
    field.send_keys(token)
    one(driver, "#sign-in").click()
    wait(driver, "#role")
    wait(driver, f"#page-{page.split('?', maxsplit=1)[0]}")


def open_page(driver: Any, base: str, fragment: str) -> None:
    driver.get(f"{base}/console/#/{fragment}")
    wait(driver, f"#page-{fragment.split('?', maxsplit=1)[0]}")


def screenshot(driver: Any, name: str, fallback: Path) -> Path:
    """The whole page as PNG: under ``$IPAM_CONSOLE_SCREENSHOTS`` if set, else ``fallback``."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    width = driver.execute_script("return window.innerWidth")
    height = driver.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
    # The viewport made as tall as the page (a window cannot grow past the virtual screen).
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": int(width), "height": min(int(height), 4000), "deviceScaleFactor": 1,
        "mobile": False})
    try:
        path = folder / f"{name}.png"
        assert driver.save_screenshot(str(path)), f"screenshot {path} failed"
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000, f"{path} is not a real PNG"
    return path
