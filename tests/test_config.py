"""Settings: queue matching, SQLite paths, the parse budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpdesk.config import ConfigError
from helpdesk.config import Queue
from helpdesk.config import load_settings
from helpdesk.files import sqlite_path


def test_queue_matching_ignores_case_and_extension() -> None:
    queue = Queue("dsi", ("dsi.support@univ.example",), "dsi")
    assert queue.matches("DSI.Support+42@Univ.Example")
    assert not queue.matches("dsi.support@other.example")
    assert not queue.matches("dsi@univ.example")


def test_a_bare_queue_address_matches_any_domain() -> None:
    queue = Queue("helpdesk", ("helpdesk",), "it")
    assert queue.matches("helpdesk@univ.example")
    assert queue.matches("helpdesk+7@mail.univ.example")
    assert queue.matches("helpdesk")
    assert not queue.matches("other@univ.example")


def test_relative_sqlite_paths_follow_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "conf dir" / "helpdesk.toml"
    config.parent.mkdir()
    for url in ("sqlite:///data/h b.db", "sqlite+pysqlite:///data/h b.db"):
        config.write_text(f'[database]\nurl = "{url}"\n')
        settings = load_settings(config)
        assert sqlite_path(settings.database_url) == str(config.parent / "data" / "h b.db")


def test_sqlite_path_decodes_like_sqlalchemy() -> None:
    from sqlalchemy.engine import make_url

    url = "sqlite:////tmp/a%20b%C3%A9.db"
    assert sqlite_path(url) == make_url(url).database == "/tmp/a bé.db"


def test_the_parse_budget_is_read_from_mail_and_checked(tmp_path: Path) -> None:
    config = tmp_path / "helpdesk.toml"
    config.write_text('[database]\nurl = "sqlite:///h.db"\n')
    assert load_settings(config).parse_budget_s == 60.0
    for value, seconds in (("5", 5.0), ("0.5", 0.5), ("3600", 3600.0)):
        config.write_text(f'[database]\nurl = "sqlite:///h.db"\n[mail]\nparse_budget_s = {value}\n')
        assert load_settings(config).parse_budget_s == seconds
    for bad in ("0", "-1", "3601", '"60"', "true"):
        config.write_text(f'[database]\nurl = "sqlite:///h.db"\n[mail]\nparse_budget_s = {bad}\n')
        with pytest.raises(ConfigError, match=r"\[mail\] parse_budget_s must be a number"):
            load_settings(config)


def test_cc_options_are_read_from_tickets_and_checked(tmp_path: Path) -> None:
    config = tmp_path / "helpdesk.toml"
    config.write_text('[database]\nurl = "sqlite:///h.db"\n')
    settings = load_settings(config)
    assert (settings.notify_cc, settings.notify_cc_domains, settings.notify_cc_max) == (
        True,
        (),
        10,
    )
    config.write_text(
        '[database]\nurl = "sqlite:///h.db"\n[tickets]\nnotify_cc = false\n'
        'notify_cc_domains = ["Univ.Example", "@labo.example"]\nnotify_cc_max = 3\n'
    )
    settings = load_settings(config)
    assert (settings.notify_cc, settings.notify_cc_domains, settings.notify_cc_max) == (
        False,
        ("univ.example", "labo.example"),
        3,
    )
    for bad, message in (
        ('notify_cc = "yes"', "notify_cc must be true or false"),
        ("notify_cc_domains = [1]", "notify_cc_domains must be a list of domains"),
        ('notify_cc_domains = [""]', "notify_cc_domains must be a list of domains"),
        ("notify_cc_max = -1", "notify_cc_max must be a whole number"),
    ):
        config.write_text(f'[database]\nurl = "sqlite:///h.db"\n[tickets]\n{bad}\n')
        with pytest.raises(ConfigError, match=message):
            load_settings(config)
