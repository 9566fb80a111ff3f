"""`sollol discover`: scan subnets for Ollama, llama-server and rpc-server backends and fingerprint them."""
