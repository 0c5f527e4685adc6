"""Headless Chromium driving the shop page (``/shop/``): the browser test
(tests/integration/test_shop_browser.py) and the benchmark (bench/shop_bench.py) share it.

The system browser only: Debian's ``chromium`` and ``chromium-driver`` (``apt-get install
chromium chromium-driver``). The driver path is given to Selenium, so Selenium Manager never
runs and nothing is downloaded.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


class BrowserMissing(RuntimeError):
    """No system Chromium or chromedriver on PATH."""


def chromium(width: int = 1280, height: int = 1000) -> WebDriver:
    """A headless Chromium from PATH (raises :class:`BrowserMissing` without one)."""
    driver = shutil.which("chromedriver")
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if driver is None or browser is None:
        raise BrowserMissing(
            "the browser test needs the system Chromium and its driver on PATH: "
            "apt-get install chromium chromium-driver "
            f"(found chromedriver={driver}, chromium={browser})"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # containers and CI run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


@dataclass(frozen=True)
class Card:
    item_id: str
    category: str
    explored: bool


class ShopPage:
    """The shop page as a user sees it: what is on the shelf and in the side panel, and the
    things a user does (pick a category, open a product, close it)."""

    def __init__(self, driver: WebDriver, timeout: float = 30.0) -> None:
        self.driver = driver
        self.timeout = timeout

    def wait(self, condition, timeout: float | None = None):  # type: ignore[no-untyped-def]
        return WebDriverWait(self.driver, timeout or self.timeout, poll_frequency=0.02).until(
            lambda d: condition()
        )

    def open(self, base: str, key: str, user: str | None = None, **query: str) -> None:
        """Load the page (``key`` in the fragment, as ``ig shop`` prints it); wait for the
        first shelf."""
        params = {**({"user": user} if user else {}), **query}
        suffix = f"?{urlencode(params)}" if params else ""
        self.driver.get("about:blank")  # a full load even when only the fragment differs
        self.driver.get(f"{base}/shop/{suffix}#key={key}")
        self.wait(lambda: self.shelf_version() >= 1)

    def script(self, js: str):  # type: ignore[no-untyped-def]
        return self.driver.execute_script(js)

    def shelf_version(self) -> int:
        return int(
            self.script("return Number(document.getElementById('shelf').dataset.version || 0)")
        )

    def shelf(self) -> list[Card]:
        rows = self.script(
            "return [...document.querySelectorAll('#shelf .card')].map(b => "
            "[b.dataset.itemId, b.dataset.category, b.dataset.explored === 'true'])"
        )
        return [Card(*row) for row in rows]

    def pick_category(self, category: str) -> list[str]:
        """Filter the product grid by ``category``; returns the item ids it shows."""
        self.driver.execute_script(
            "const s = document.getElementById('category'); s.value = arguments[0];"
            "s.dispatchEvent(new Event('change'));",
            category,
        )
        self.wait(
            lambda: self.script(
                "const g=[...document.querySelectorAll('#grid .card')];"
                f"return g.length > 0 && g.every(b => b.dataset.category === {category!r})"
            )
        )
        return self.script(
            "return [...document.querySelectorAll('#grid .card')].map(b => b.dataset.itemId)"
        )

    def open_product(self, item_id: str, where: str = "grid", keyboard: bool = False) -> None:
        """Open a product card (a real click, or focus + Enter with ``keyboard``; the page
        posts the view), wait until the shelf has been refreshed after it, close the product
        (its Close button, or Escape)."""
        before = self.shelf_version()
        card = self.driver.find_element(
            By.CSS_SELECTOR, f'#{where} .card[data-item-id="{item_id}"]'
        )
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", card)
        if keyboard:
            self.driver.execute_script("arguments[0].focus()", card)
            ActionChains(self.driver).send_keys(Keys.ENTER).perform()
        else:
            card.click()
        self.wait(lambda: self.script("return document.getElementById('product').open"))
        self.wait(lambda: self.shelf_version() > before)
        if keyboard:
            ActionChains(self.driver).send_keys(Keys.ESCAPE).perform()
        else:
            self.driver.find_element(By.ID, "close").click()
        self.wait(lambda: not self.script("return document.getElementById('product').open"))

    def overflows(self, width: int, height: int = 844) -> bool:
        """At this window size, is the page wider than the window (a horizontal scroll)?"""
        size = self.driver.get_window_size()
        self.driver.set_window_size(width, height)
        try:
            return bool(
                self.script("return document.documentElement.scrollWidth > window.innerWidth")
            )
        finally:
            self.driver.set_window_size(size["width"], size["height"])

    def search(self, query: str) -> list[Card]:
        """Type ``query`` into the search box, press Enter; the result cards."""
        box = self.driver.find_element(By.ID, "q")
        box.clear()
        box.send_keys(query, Keys.ENTER)
        self.wait(lambda: self.script("return document.querySelectorAll('#results .card').length"))
        rows = self.script(
            "return [...document.querySelectorAll('#results .card')].map(b => "
            "[b.dataset.itemId, b.dataset.category, b.dataset.explored === 'true'])"
        )
        return [Card(*row) for row in rows]

    def product_status(self) -> str:
        return self.script("return document.getElementById('product-status').textContent")

    def recent_items(self) -> list[str]:
        """The item ids the side panel lists as the shopper's recent items (from Feast)."""
        return self.script(
            "return [...document.querySelectorAll('#recent-items li')].map(li => li.dataset.itemId)"
        )

    def top_categories(self) -> list[str]:
        return self.script(
            "return [...document.querySelectorAll('#top-categories .bar')]"
            ".map(b => b.dataset.category)"
        )

    def notice(self) -> str:
        return self.script(
            "const n = document.getElementById('notice'); return n.hidden ? '' : n.textContent"
        )

    def timings(self) -> dict:
        return self.script("return window.shopTimings")

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path
