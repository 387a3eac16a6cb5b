#!/usr/bin/env bash
# Install (idempotently) the MTA the end-to-end tests in tests/test_mta.py drive:
#   bash .ci/mta.sh postfix   # Debian's postfix, "Local only", loopback, not started
#   bash .ci/mta.sh exim      # Debian's exim4-daemon-light, "local delivery only", split config
#   bash .ci/mta.sh milters   # Debian's opendkim and opendmarc for Postfix, not started
#   bash .ci/mta.sh stop      # stop whichever of them runs (never leaves port 25 open)
# The two packages conflict: installing one removes the other. Quick (no apt) when the wanted
# one is already installed. Preseeds and pitfalls: ../shared/research/mta.md (sections 2, 3, 6).
# Needs root. The tests configure the MTA themselves (relay to their SMTP server, aliases).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

apt_install() {
  # Another session may hold the dpkg lock (mta.md P16): wait for it instead of failing.
  apt-get -o DPkg::Lock::Timeout=120 update -qq
  apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "$@" >/dev/null
}

postfix_running() { [ -x /usr/sbin/postfix ] && /usr/sbin/postfix status >/dev/null 2>&1; }

exim_pid() {
  local pid
  pid=$(cat /run/exim4/exim.pid 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

stop_all() {
  if postfix_running; then /usr/sbin/postfix stop >/dev/null 2>&1 || true; fi
  local pid
  pid=$(exim_pid)
  if [ -n "$pid" ]; then
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f /run/exim4/exim.pid
  for milter in opendkim opendmarc; do # started by hand with Debian's pid files
    pid=$(cat "/run/$milter/$milter.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "/run/$milter/$milter.pid"
  done
}

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "mta.sh: installing an MTA needs root" >&2
    exit 1
  fi
}

case "${1:-}" in
  postfix)
    need_root
    if ! installed postfix; then
      stop_all
      printf '%s\n' \
        'postfix postfix/main_mailer_type select Local only' \
        'postfix postfix/mailname string localhost' | debconf-set-selections
      apt_install postfix # removes exim4-daemon-light if present
    fi
    echo "mta: $(dpkg-query -W -f='${Package} ${Version}' postfix) installed"
    ;;
  exim)
    need_root
    if ! installed exim4-daemon-light; then
      stop_all
      printf '%s\n' \
        'exim4-config exim4/dc_eximconfig_configtype select local delivery only; not on a network' \
        'exim4-config exim4/dc_local_interfaces string 127.0.0.1 ; ::1' \
        'exim4-config exim4/mailname string localhost' \
        'exim4-config exim4/dc_other_hostnames string' \
        'exim4-config exim4/use_split_config boolean true' \
        'exim4-config exim4/dc_postmaster string root' | debconf-set-selections
      apt_install exim4-daemon-light # removes postfix if present
    fi
    echo "mta: $(dpkg-query -W -f='${Package} ${Version}' exim4-daemon-light) installed"
    ;;
  milters)
    need_root
    if ! installed opendkim || ! installed opendmarc; then
      # dbconfig-no-thanks: opendmarc's postinst would otherwise create a database for its
      # reports in whatever MySQL/MariaDB answers on this host.
      apt_install opendkim opendmarc dbconfig-no-thanks
    fi
    echo "mta: $(dpkg-query -W -f='${Package} ${Version} ' opendkim opendmarc)installed"
    ;;
  stop)
    stop_all
    ;;
  *)
    echo "usage: $0 postfix|exim|milters|stop" >&2
    exit 64
    ;;
esac
