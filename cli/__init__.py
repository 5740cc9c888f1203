"""``agent-runner``: the command line for people, over the REST API."""
