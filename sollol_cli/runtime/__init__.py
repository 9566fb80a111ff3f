"""The in-process cluster runtime: which backends exist, how healthy they are, and where requests go."""
