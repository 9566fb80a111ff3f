"""llama.cpp: the pinned source, the build of rpc-server/llama-server, and the tiny demo model."""
