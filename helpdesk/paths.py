"""Default locations, shared by the config loader and the pipe's stdlib-only client."""

__all__ = ["DEFAULT_CONFIG_PATH", "DEFAULT_INGESTD_SOCKET"]

DEFAULT_CONFIG_PATH = "/etc/helpdesk/helpdesk.toml"
# systemd's RuntimeDirectory=helpdesk makes /run/helpdesk (etc/systemd/helpdesk-ingestd.service).
DEFAULT_INGESTD_SOCKET = "/run/helpdesk/ingestd.sock"
