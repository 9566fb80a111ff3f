"""`sollol serve`: an Ollama- and OpenAI-compatible HTTP gateway in front of the whole cluster.

The only package (besides backends/) that imports aiohttp. `app.create_app` builds the application around
a `ClusterRuntime`; `server.serve` runs it until a stop signal and shuts it down gracefully.
"""
