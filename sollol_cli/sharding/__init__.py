"""Sharding one model over llama.cpp rpc-servers: where the GGUF comes from (a path or an Ollama store), what
it needs in memory, and the `llama-server --rpc` coordinator that runs it."""
