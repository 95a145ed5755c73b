#!/usr/bin/env bash
# Headless Chromium for the report's browser test (tests/test_report_browser.py): Debian's `chromium`
# package, installed only when /usr/bin/chromium is missing. Needs root (CI runs as root) or sudo.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "install-browser: /usr/bin/chromium is missing and this user cannot install packages (run as root)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core  # a font, so the page has text on a bare machine
/usr/bin/chromium --version
