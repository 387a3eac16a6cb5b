#!/usr/bin/env bash
# Make sure the browser tests (tests/test_browser.py) have their browser: Debian's chromium,
# which Playwright drives through executable_path (never `playwright install`: it downloads
# its own build, unreachable here), and fonts-liberation, so pages render with the metrics of
# a desktop's Arial/Times rather than the wider DejaVu.
# Quick when all is there; installs what is missing when run as root.
set -euo pipefail

PACKAGES=(chromium fonts-liberation)

if [ "${HELPDESK_TEST_NO_BROWSER:-}" = 1 ]; then
  echo "browser: HELPDESK_TEST_NO_BROWSER=1, the browser tests will be skipped" >&2
  exit 0
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
for package in "${PACKAGES[@]}"; do
  installed "$package" || missing+=("$package")
done
# The tests launch this very path; a package without it is no use to them.
if [ ${#missing[@]} -eq 0 ] && [ -x /usr/bin/chromium ]; then
  echo "browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) ready"
  exit 0
fi
[ ${#missing[@]} -gt 0 ] || missing=(chromium)

if [ "$(id -u)" != 0 ]; then
  echo "browser: ${missing[*]} missing for the browser tests; run 'sudo make test-deps' once" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# No recommends: chromium's pull in avahi, cups and a systemd upgrade the tests do not need.
apt-get -o DPkg::Lock::Timeout=120 update -qq
apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
[ -x /usr/bin/chromium ] || { echo "browser: /usr/bin/chromium still missing" >&2; exit 1; }
echo "browser: installed ${missing[*]}; $(/usr/bin/chromium --version 2>/dev/null || true)"
