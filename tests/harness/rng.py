"""A random source for tests whose story needs a known first choice among equally good backends."""

from __future__ import annotations

import random


class NameOrder(random.Random):
    """Every draw is 0.0, so `router.choose` takes the first of the equally good backends by name (what it
    did before it chose among them at random). The router's own tests cover the random choice."""

    def random(self) -> float:
        return 0.0
