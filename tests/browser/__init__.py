"""Browser tests' helpers: Debian's Chromium driven by Selenium through Debian's chromedriver."""
