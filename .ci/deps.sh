#!/usr/bin/env bash
# Make sure what the test suite needs from the system is there and running:
# PostgreSQL reachable at 127.0.0.1:5432 as postgres without a password, database `test`;
# the openssl command; libfaketime; Debian's chromium for the browser tests (.ci/browser.sh);
# slapd and ldap-utils for the LDAP directory tests (.ci/ldap.sh).
# Idempotent and quick when all is in place; installs and configures when run as root.
set -euo pipefail

PG_URL=${HELPDESK_TEST_PG:-postgresql://postgres@127.0.0.1:5432/test}

pg_ok() { psql "$PG_URL" -Atqc 'select 1' >/dev/null 2>&1; }
apt_install() {
  apt-get -o DPkg::Lock::Timeout=120 update -qq
  apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "$@" >/dev/null
}

# The SMTP tests make a TLS certificate with the openssl command.
if ! command -v openssl >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: the openssl command is missing; run 'sudo make test-deps' once" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt_install openssl
fi

# The auto-close tests move the clock of real processes with libfaketime.
if ! ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: libfaketime is missing; run 'sudo make test-deps' once" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt_install faketime
fi

# The browser tests drive Debian's chromium; the directory tests run Debian's slapd.
bash "$(dirname "$0")/browser.sh"
bash "$(dirname "$0")/ldap.sh"

if command -v psql >/dev/null && pg_ok; then
  echo "deps: PostgreSQL reachable at $PG_URL"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "deps: PostgreSQL is not reachable at $PG_URL; run 'sudo make test-deps' once" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client

version=$(ls /etc/postgresql | sort -V | tail -n1)
if ! pg_ok; then
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # A test machine: let the suite connect over loopback without a password.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 && break; sleep 0.5; done
  su postgres -c "psql -Atqc \"select 1 from pg_database where datname='test'\"" | grep -q 1 \
    || su postgres -c "createdb test"
fi
pg_ok || { echo "deps: PostgreSQL still unreachable at $PG_URL" >&2; exit 1; }
echo "deps: PostgreSQL ready at $PG_URL"
