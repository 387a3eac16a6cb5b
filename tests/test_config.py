"""Settings: queue matching and SQLite paths."""

from __future__ import annotations

from pathlib import Path

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
