#!/usr/bin/env bash
# The browser end-to-end test (test/web/browser.test.ts) drives Debian's Chromium headless. Install the
# `chromium` package when /usr/bin/chromium is missing.
set -u
CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "$CHROMIUM not found and not root: install Chromium (apt-get install chromium) for the browser test" >&2
  exit 1
fi
echo "installing chromium (browser end-to-end test)..." >&2
# apt-get update may exit non-zero when one mirror index is mid-sync; judge by the binary afterwards.
apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || true
if [ ! -x "$CHROMIUM" ]; then
  echo "could not install chromium ($CHROMIUM is still missing)" >&2
  exit 1
fi
