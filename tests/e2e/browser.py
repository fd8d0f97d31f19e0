"""Headless Debian Chromium driven through chromedriver (both from Debian's packages)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1100",
)


# Every host name but loopback fails to resolve: the machine as if its network cable were pulled, while the
# platform's own servers on 127.0.0.1 still answer.
NETWORK_CUT = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@contextmanager
def chromium(*extra_flags: str) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, as a person's devtools show it
    for flag in (*FLAGS, *extra_flags):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()
