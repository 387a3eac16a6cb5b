#!/usr/bin/env bash
# Make sure the LDAP tests (tests/test_directory_ldap.py) have Debian's OpenLDAP server and
# tools: /usr/sbin/slapd, the schemas in /etc/ldap/schema and ldap-utils. The tests start a
# slapd of their own (own config, own port, own database in a temporary folder), so the
# system's slapd service is neither configured nor started here.
# Idempotent and quick when all is there; installs what is missing when run as root.
set -euo pipefail

PACKAGES=(slapd ldap-utils)

if [ "${HELPDESK_TEST_NO_LDAP:-}" = 1 ]; then
  echo "ldap: HELPDESK_TEST_NO_LDAP=1, the LDAP tests will be skipped" >&2
  exit 0
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
ready() {
  [ -x /usr/sbin/slapd ] && [ -f /etc/ldap/schema/inetorgperson.schema ] \
    && command -v ldapadd >/dev/null
}

missing=()
for package in "${PACKAGES[@]}"; do
  installed "$package" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ] && ready; then
  echo "ldap: slapd $(dpkg-query -W -f='${Version}' slapd) and ldap-utils ready"
  exit 0
fi
# Installed but files gone (removed by hand, say): reinstalling brings them back.
[ ${#missing[@]} -gt 0 ] || missing=("${PACKAGES[@]}")

if [ "$(id -u)" != 0 ]; then
  echo "ldap: ${missing[*]} missing for the LDAP tests; run 'sudo bash .ci/ldap.sh' once" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# No system directory: without this the package makes a database for the host's domain and
# starts a slapd on port 389 that nothing here uses.
echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
apt-get -o DPkg::Lock::Timeout=120 update -qq
apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "${missing[@]}" \
  >/dev/null
ready || { echo "ldap: slapd, its schemas or ldapadd still missing" >&2; exit 1; }
echo "ldap: installed ${missing[*]} (slapd $(dpkg-query -W -f='${Version}' slapd))"
