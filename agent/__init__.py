"""herdcast's node agent: everything that runs on a node, also usable on a server."""

__version__ = "0.1.0"
