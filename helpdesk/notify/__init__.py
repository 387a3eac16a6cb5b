"""Outgoing mail: templates, outbox, transports, rate caps."""
