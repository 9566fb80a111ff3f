"""Reaching nodes: `runner.py` runs commands and copies files over SSH (the only asyncssh user) or locally."""
