"""The LDAP directory source against a real OpenLDAP server (Debian's slapd), no mocks.

The module starts one slapd of its own on free loopback ports, with its own config and
mdb database in a temporary folder, and a size limit of 5 entries so that only a paged
search brings the whole directory. slapd is required: these tests fail when it is not
installed (`sudo bash .ci/ldap.sh`), unless HELPDESK_TEST_NO_LDAP=1 is set on purpose
(then they are skipped, loudly), as HELPDESK_TEST_NO_POSTGRES does for PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from conftest import write_config
from smtp_catcher import catcher_certificate

from helpdesk import directory_ldap
from helpdesk import people
from helpdesk.config import Settings
from helpdesk.config import load_settings
from helpdesk.directory import DirectoryError
from helpdesk.directory import ImportResult
from helpdesk.directory import import_rows
from helpdesk.store import Store

SLAPD = "/usr/sbin/slapd"
SCHEMAS = Path("/etc/ldap/schema")
SUFFIX = "dc=univ,dc=example"
PEOPLE = f"ou=people,{SUFFIX}"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "root-secret-for-tests"
READER_DN = f"cn=helpdesk,{SUFFIX}"
READER_PW = "reader-s3cret-pw"
CAPPED_DN = f"cn=capped,{SUFFIX}"
CAPPED_PW = "capped-s3cret-pw"
SIZE_LIMIT = 5
# Every person of ou=people that has a mail: (uid, mail, cn, l). More than SIZE_LIMIT,
# with a non-ASCII name and site and an upper-case address.
PERSONS = [(f"p{n:02d}", f"p{n:02d}@univ.example", f"Person {n}", "Ifs") for n in range(1, 11)] + [
    ("edupre", "elodie.dupre@univ.example", "Élodie Dupré", "Alençon"),
    ("zupper", "Zoe.Upper@Univ.Example", "Zoé Upper", "Caen"),
]
NO_MAIL = f"uid=nomail,{PEOPLE}"


@dataclass
class Slapd:
    """The running test server and what a client needs to reach it."""

    url: str
    ldaps_url: str
    ca_file: str

    def tool(self, name: str, *args: str, ldif: str | None = None) -> None:
        """Run an ldap-utils command as the root DN (writes bypass ACLs and limits)."""
        command = [shutil.which(name) or name, "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PW]
        done = subprocess.run(
            [*command, *args], input=ldif, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, f"{name} {' '.join(args)}: {done.stderr}"


def _slapd_conf(directory: Path, cert: str, key: str) -> str:
    return f"""
include {SCHEMAS}/core.schema
include {SCHEMAS}/cosine.schema
include {SCHEMAS}/inetorgperson.schema
pidfile {directory}/slapd.pid
argsfile {directory}/slapd.args
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
modulepath /usr/lib/ldap
moduleload back_mdb

database mdb
maxsize 10485760
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {directory}/db
# A plain search stops at {SIZE_LIMIT} entries and pages hold {SIZE_LIMIT} at most, but a
# paged search may go through everything (size.prtotal), as on a campus directory ...
sizelimit size.soft={SIZE_LIMIT} size.hard={SIZE_LIMIT} size.pr={SIZE_LIMIT} size.prtotal=unlimited
# ... except for this account, whose paged searches stop at the hard limit too.
limits dn.exact="{CAPPED_DN}" size.soft={SIZE_LIMIT} size.hard={SIZE_LIMIT}
  size.pr={SIZE_LIMIT} size.prtotal=hard
access to attrs=userPassword by anonymous auth by * none
access to * by * read
"""


def ldif(*entries: tuple[str, dict[str, str | list[str]]]) -> str:
    """LDIF for (dn, attributes) pairs; non-ASCII values base64, as RFC 2849 wants."""
    lines = []
    for dn, attributes in entries:
        lines.append(f"dn: {dn}")
        for name, values in attributes.items():
            for value in [values] if isinstance(values, str) else values:
                if value.isascii():
                    lines.append(f"{name}: {value}")
                else:
                    lines.append(f"{name}:: {base64.b64encode(value.encode()).decode()}")
        lines.append("")
    return "\n".join(lines) + "\n"


def person(uid: str, mail: str | None, cn: str, site: str, branch: str = PEOPLE) -> tuple:
    """An inetOrgPerson entry for ldif()."""
    attributes: dict[str, str | list[str]] = {
        "objectClass": "inetOrgPerson",
        "uid": uid,
        "cn": cn,
        "sn": cn.split()[-1],
        "l": site,
    }
    if mail:
        attributes["mail"] = mail
    return (f"uid={uid},{branch}", attributes)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"slapd exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"slapd did not listen on 127.0.0.1:{port} within 15 s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A slapd of this module's own, loaded with ou=people; stopped at the end."""
    if os.environ.get("HELPDESK_TEST_NO_LDAP") == "1":
        pytest.skip("LDAP tests disabled by HELPDESK_TEST_NO_LDAP=1")
    missing = [p for p in (SLAPD, str(SCHEMAS / "inetorgperson.schema")) if not os.path.exists(p)]
    missing += [tool for tool in ("ldapadd", "ldapdelete", "ldapmodify") if not shutil.which(tool)]
    if missing:
        pytest.fail(
            f"the LDAP tests need slapd and ldap-utils ({', '.join(missing)} missing): run"
            " `sudo bash .ci/ldap.sh` once, or set HELPDESK_TEST_NO_LDAP=1 to skip them"
        )
    directory = tmp_path_factory.mktemp("slapd")
    (directory / "db").mkdir()
    cert, key = catcher_certificate()  # self-signed for 127.0.0.1 and localhost
    conf = directory / "slapd.conf"
    conf.write_text(_slapd_conf(directory, cert, key), encoding="utf-8")
    port, tls_port = _free_port(), _free_port()
    log = directory / "slapd.log"
    with open(log, "wb") as output:
        # -d keeps slapd in the foreground, so this Popen is the server itself.
        process = subprocess.Popen(
            [
                SLAPD,
                "-f",
                str(conf),
                "-h",
                f"ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/",
                "-d",
                "0",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(port, process, log)
        server = Slapd(f"ldap://127.0.0.1:{port}", f"ldaps://127.0.0.1:{tls_port}", cert)
        server.tool(
            "ldapadd",
            ldif=ldif(
                (SUFFIX, {"objectClass": ["dcObject", "organization"], "dc": "univ", "o": "Univ"}),
                (PEOPLE, {"objectClass": "organizationalUnit", "ou": "people"}),
                *[
                    (
                        dn,
                        {
                            "objectClass": ["organizationalRole", "simpleSecurityObject"],
                            "cn": dn.split(",")[0][3:],
                            "userPassword": pw,
                        },
                    )
                    for dn, pw in ((READER_DN, READER_PW), (CAPPED_DN, CAPPED_PW))
                ],
                *[person(*p) for p in PERSONS],
                person("nomail", None, "Nora Nomail", "Ifs"),
            ),
        )
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- helpers -----------------------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    return str(value)


def ldap_settings(config: Path, db_url: str, **keys: Any) -> Settings:
    """Rewrite the test config with a [directory.ldap] table of these keys; load it."""
    table = "[directory.ldap]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())
    return load_settings(write_config(config.parent, db_url, extra=table + "\n"))


def reader(server: Slapd, **keys: Any) -> dict[str, Any]:
    """[directory.ldap] keys for the service account on the people branch."""
    return {
        "url": server.url,
        "base": PEOPLE,
        "bind_dn": READER_DN,
        "bind_password": READER_PW,
        "attributes": {"site": "l"},
        "page_size": SIZE_LIMIT,
        **keys,
    }


def sync(settings: Settings) -> ImportResult:
    with Store(settings.database_url, settings.busy_timeout) as store:
        return directory_ldap.sync(store, settings)


def entry(settings: Settings, email: str) -> dict[str, str] | None:
    with Store(settings.database_url, settings.busy_timeout) as store:
        return people.directory_entry(store, email)


def entries(settings: Settings) -> dict[str, str]:
    """Every directory entry: email -> source."""
    with Store(settings.database_url, settings.busy_timeout) as store:
        return dict(store.execute("SELECT email, source FROM directory_entry").fetchall())


# -- against the server, on both databases --------------------------------------------


def test_sync_imports_everyone_with_the_mapped_attributes(
    slapd: Slapd, config: Path, db_url: str
) -> None:
    settings = ldap_settings(config, db_url, **reader(slapd))
    result = sync(settings)
    assert (result.added, result.updated, result.removed, result.skipped) == (12, 0, 0, [])
    assert len(PERSONS) > SIZE_LIMIT  # so the paged search went past the server's limit
    assert entries(settings) == {mail.lower(): "ldap" for _uid, mail, _cn, _l in PERSONS}
    assert entry(settings, "p07@univ.example") == {"name": "Person 7", "site": "Ifs"}
    assert entry(settings, "elodie.dupre@univ.example") == {
        "name": "Élodie Dupré",
        "site": "Alençon",
    }
    assert entry(settings, "zoe.upper@univ.example") == {"name": "Zoé Upper", "site": "Caen"}

    again = sync(settings)
    assert (again.added, again.updated, again.unchanged, again.removed) == (0, 0, 12, 0)

    # A filter that lets the entry without mail through: skipped, and named by its DN.
    wide = ldap_settings(config, db_url, **reader(slapd, filter="(objectClass=inetOrgPerson)"))
    result = sync(wide)
    assert (result.unchanged, result.removed) == (12, 0)
    assert result.skipped == [f"{NO_MAIL}: no valid email (empty)"]


def test_anonymous_paged_sync_goes_past_the_size_limit(
    slapd: Slapd, config: Path, db_url: str
) -> None:
    # The premise: a search without paging stops at the size limit.
    plain = subprocess.run(
        ["ldapsearch", "-x", "-LLL", "-H", slapd.url, "-b", PEOPLE, "(mail=*)", "mail"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert plain.returncode == 4, plain.stderr  # sizeLimitExceeded
    assert plain.stdout.count("\nmail: ") + plain.stdout.startswith("mail: ") == SIZE_LIMIT
    # Anonymous (no bind_dn), pages of 2: six pages, everyone arrives.
    settings = ldap_settings(config, db_url, url=slapd.url, base=PEOPLE, page_size=2)
    result = sync(settings)
    assert result.added == len(PERSONS)
    assert entry(settings, "p10@univ.example") == {"name": "Person 10"}


def test_a_partial_or_empty_answer_changes_nothing(slapd: Slapd, config: Path, db_url: str) -> None:
    settings = ldap_settings(config, db_url, **reader(slapd))
    assert sync(settings).added == len(PERSONS)
    for keys, expected in (
        # This account's paged searches stop at the size limit: a part of the directory.
        (dict(bind_dn=CAPPED_DN, bind_password=CAPPED_PW), "stopped early (sizeLimitExceeded)"),
        (dict(filter="(uid=nobody)"), "no entry under"),
        (dict(attributes={"email": "mial"}), "none of the 12 entries found has a mial"),
    ):
        with pytest.raises(DirectoryError) as caught:
            sync(ldap_settings(config, db_url, **reader(slapd, **keys)))
        message = str(caught.value)
        assert expected in message and message.endswith("nothing imported, nothing removed")
        assert "\n" not in message and CAPPED_PW not in message
        assert len(entries(settings)) == len(PERSONS)  # no prune after such an answer


def test_people_gone_from_ldap_are_pruned_and_other_sources_stay(
    slapd: Slapd, config: Path, db_url: str
) -> None:
    branch = f"ou=t{uuid.uuid4().hex[:8]},{SUFFIX}"
    slapd.tool(
        "ldapadd",
        ldif=ldif(
            (branch, {"objectClass": "organizationalUnit", "ou": branch[3:].split(",")[0]}),
            person("ana", "ana@univ.example", "Ana A", "Ifs", branch),
            person("bob", "bob@univ.example", "Bob B", "Caen", branch),
            person("cid", "cid@univ.example", "Cid C", "Lisieux", branch),
        ),
    )
    try:
        settings = ldap_settings(config, db_url, **reader(slapd, base=branch))
        with Store(settings.database_url, settings.busy_timeout) as store:
            with store.transaction():
                csv = [{"email": "dora@univ.example", "name": "Dora D", "site": "Vire"}]
                assert import_rows(store, csv, "csv:people.csv").added == 1
        assert sync(settings).added == 3

        slapd.tool("ldapdelete", f"uid=bob,{branch}")
        slapd.tool(
            "ldapmodify",
            ldif=f"dn: uid=cid,{branch}\nchangetype: modify\nreplace: l\nl: Caen\n\n",
        )
        result = sync(settings)
        assert (result.added, result.updated, result.unchanged, result.removed) == (0, 1, 1, 1)
        assert entries(settings) == {
            "ana@univ.example": "ldap",
            "cid@univ.example": "ldap",
            "dora@univ.example": "csv:people.csv",
        }
        assert entry(settings, "bob@univ.example") is None
        assert entry(settings, "cid@univ.example") == {"name": "Cid C", "site": "Caen"}
        assert entry(settings, "dora@univ.example") == {"name": "Dora D", "site": "Vire"}
    finally:
        slapd.tool("ldapdelete", "-r", branch)


def test_a_wrong_password_is_a_directory_error_without_the_password(
    slapd: Slapd, config: Path, db_url: str
) -> None:
    wrong = "Wr0ng-pa55word-xyz"
    settings = ldap_settings(config, db_url, **reader(slapd, bind_password=wrong))
    with pytest.raises(DirectoryError) as caught:
        sync(settings)
    message = str(caught.value)
    assert message == (f"LDAP {slapd.url}: bind as {READER_DN} refused: wrong bind_dn or password")
    assert wrong not in message and READER_PW not in message
    assert entries(settings) == {}


def test_an_unreachable_server_is_a_quick_directory_error(config: Path, db_url: str) -> None:
    # No slapd needed: a closed port, then a port that accepts but never answers.
    start = time.monotonic()
    settings = ldap_settings(config, db_url, url=f"ldap://127.0.0.1:{_free_port()}", base=PEOPLE)
    with pytest.raises(DirectoryError, match=r"cannot connect \(.*Connection refused\)$"):
        sync(settings)
    assert time.monotonic() - start < 3
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"ldap://127.0.0.1:{silent.getsockname()[1]}"
        settings = ldap_settings(config, db_url, url=url, base=PEOPLE, timeout=1)
        start = time.monotonic()
        with pytest.raises(DirectoryError, match=r"timed out \(timeout = 1 s\)\)$"):
            sync(settings)
        assert time.monotonic() - start < 5
    assert entries(settings) == {}


def test_cli_sync_ldap(slapd: Slapd, config: Path, db_url: str) -> None:
    # The password from a file next to the config, as a sysadmin keeps it.
    (config.parent / "ldap-password").write_text(READER_PW + "\n", encoding="utf-8")
    keys = reader(slapd)
    del keys["bind_password"]
    ldap_settings(config, db_url, **keys, bind_password_file="ldap-password")
    result = run_cli(config, "directory", "sync-ldap")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "12 added, 0 updated, 0 unchanged, 0 removed"
    shown = run_cli(config, "directory", "show", "P03@univ.example", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["entry"] == {"name": "Person 3", "site": "Ifs"}

    (config.parent / "ldap-password").write_text("not-the-password\n", encoding="utf-8")
    failed = run_cli(config, "directory", "sync-ldap")
    assert failed.returncode == 1
    assert failed.stderr.strip() == (
        f"Error: directory: LDAP {slapd.url}: bind as {READER_DN} refused:"
        " wrong bind_dn or password"
    )
    assert "not-the-password" not in failed.stderr + failed.stdout


# -- against the server, no database ---------------------------------------------------


def test_pages_larger_than_the_server_allows_say_which_key_to_lower(slapd: Slapd) -> None:
    keys = reader(slapd)
    del keys["page_size"]  # the default, 500, over this server's limit of 5
    with pytest.raises(DirectoryError, match=r"lower page_size \(500\)"):
        directory_ldap.fetch_rows(directory_ldap.read_options(keys))


def test_tls_checks_the_certificate(slapd: Slapd) -> None:
    for keys in (
        reader(slapd, url=slapd.ldaps_url, ca_file=slapd.ca_file),
        reader(slapd, url=slapd.ldaps_url.replace("127.0.0.1", "localhost"), ca_file=slapd.ca_file),
        reader(slapd, starttls=True, ca_file=slapd.ca_file),
    ):
        rows, dns = directory_ldap.fetch_rows(directory_ldap.read_options(keys))
        assert len(rows) == len(PERSONS) == len(dns)
    # Without the CA, the self-signed certificate is refused, before any password is sent.
    for keys, step in (
        (reader(slapd, url=slapd.ldaps_url), "cannot connect"),
        (reader(slapd, starttls=True), "StartTLS failed"),
    ):
        with pytest.raises(DirectoryError, match=f"{step} .*certificate verify failed"):
            directory_ldap.fetch_rows(directory_ldap.read_options(keys))


# -- the config, no server ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, "no [directory.ldap] table"),
        ({"base": PEOPLE}, "url is required"),
        ({"url": "ldap://h"}, "base is required"),
        ({"url": "http://h", "base": PEOPLE}, "url must be ldap://HOST"),
        ({"url": "ldap://h:99999", "base": PEOPLE}, "url must be ldap://HOST"),
        ({"url": "ldap://h/dc=x??sub", "base": PEOPLE}, "url must be ldap://HOST"),
        ({"url": "ldaps://h", "base": PEOPLE, "starttls": True}, "starttls is for ldap://"),
        ({"url": "ldap://h", "base": PEOPLE, "starttls": "yes"}, "starttls must be true or"),
        ({"url": "ldap://h", "base": PEOPLE, "bind_dn": READER_DN}, "bind_dn needs bind_pass"),
        ({"url": "ldap://h", "base": PEOPLE, "bind_password": "x"}, "without bind_dn"),
        ({"url": "ldap://h", "base": "not a dn"}, "base 'not a dn' is not a DN"),
        ({"url": "ldap://h", "base": PEOPLE, "filter": "mail=*"}, "filter must be in paren"),
        ({"url": "ldap://h", "base": PEOPLE, "filter": "(a=1)(b=2)"}, "missing boolean oper"),
        ({"url": "ldap://h", "base": PEOPLE, "attributes": {"site": "l x"}}, "site must name"),
        ({"url": "ldap://h", "base": PEOPLE, "attributes": {"Site": "l"}}, "column 'Site'"),
        ({"url": "ldap://h", "base": PEOPLE, "timeout": 0}, "timeout must be a number"),
        ({"url": "ldap://h", "base": PEOPLE, "page_size": 0}, "page_size must be a whole"),
        ({"url": "ldap://h", "base": PEOPLE, "ca_file": "/nonexistent.pem"}, "no such file"),
        ({"url": "ldap://h", "base": PEOPLE, "bind_passwd": "x"}, "unknown key bind_passwd"),
    ],
)
def test_config_mistakes_name_the_key(keys: dict[str, Any], expected: str) -> None:
    with pytest.raises(DirectoryError) as caught:
        directory_ldap.read_options(keys)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bind_password_file_is_read_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(" spaced pw \n", encoding="utf-8")
    keys = {"url": "ldap://h", "base": PEOPLE, "bind_dn": READER_DN}
    options = directory_ldap.read_options(
        {**keys, "bind_password_file": "secret"}, tmp_path / "helpdesk.toml"
    )
    assert options.password == " spaced pw "
    assert (options.host, options.port, options.use_ssl) == ("h", 389, False)
    assert options.attributes == {"email": "mail", "name": "cn"}
    assert "spaced" not in repr(options)
    with pytest.raises(DirectoryError, match="bind_password_file .*missing"):
        directory_ldap.read_options(
            {**keys, "bind_password_file": "missing"}, tmp_path / "helpdesk.toml"
        )


def test_importing_the_module_does_not_load_ldap3() -> None:
    probe = "import sys, helpdesk.directory_ldap; print('ldap3' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
