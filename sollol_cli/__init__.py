"""sollol: make several machines act as one LLM server."""

__version__ = "0.1.0"
