"""`sollol demo`: the localhost cluster, one sharded and one distributed prompt, then clean up."""
