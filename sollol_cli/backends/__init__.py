"""Clients for the servers sollol routes to: Ollama, llama.cpp llama-server and rpc-server nodes."""
