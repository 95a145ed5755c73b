#!/usr/bin/env bash
# System packages the tests need, from Debian, installed only when missing:
# - headless Chromium for the report's browser test (tests/test_report_browser.py), with a font;
# - a C++ compiler for torch.compile on the CPU (CapFilt's compile: true, tests/test_clean_capfilt.py).
# Needs root (CI runs as root) or sudo.
set -euo pipefail
packages=()
[ -x /usr/bin/chromium ] || packages+=(chromium fonts-dejavu-core)  # a font, so the page has text on a bare machine
command -v c++ >/dev/null 2>&1 || packages+=(g++)
if [ ${#packages[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "install-browser: missing ${packages[*]} and this user cannot install packages (run as root)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${packages[@]}"
[ -x /usr/bin/chromium ] && /usr/bin/chromium --version || true
