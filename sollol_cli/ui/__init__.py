"""Terminal rendering (the only package that imports rich). Humans read stderr, scripts read stdout."""
