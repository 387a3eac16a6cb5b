"""helpdesk-pipe: mail in, ticket out, requester kept informed."""

__version__ = "0.1.0"
