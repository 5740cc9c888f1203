"""A real TLS endpoint for the tests: certificates made with the ``openssl`` CLI, and Debian's
nginx terminating TLS in front of the session's Temporal dev server."""
