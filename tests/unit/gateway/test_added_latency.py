"""`_result`: the gateway's time is compared with the direct time of the backend that served each request."""

from __future__ import annotations

import pytest

from sollol_cli.gateway.added_latency import AddedLatency, _result


@pytest.mark.parametrize(
    ("direct", "through", "errors", "expected"),
    [
        # a fast and a slow backend: each gateway request against its own backend's median, not the mixture
        (
            {"fast": [0.010, 0.012, 0.011], "slow": [0.100, 0.102, 0.101]},
            [("fast", 0.012), ("slow", 0.102), ("fast", 0.013)],
            [],
            AddedLatency("m", 3, 56.0, 13.0, 1.0),
        ),
        # a request served by a backend never reached directly has nothing to be compared with
        ({"a": [0.010]}, [("a", 0.011), ("b", 0.5)], [], AddedLatency("m", 3, 10.0, 255.5, 1.0)),
        ({"a": []}, [], ["gateway: HTTP 503"], AddedLatency("m", 3, None, None, None, ("gateway: HTTP 503",))),
        # errors are said once each
        ({"a": [0.002]}, [("a", 0.001)], ["a: x", "a: x"], AddedLatency("m", 3, 2.0, 1.0, -1.0, ("a: x",))),
    ],
)
def test_result(
    direct: dict[str, list[float]], through: list[tuple[str, float]], errors: list[str], expected: AddedLatency
) -> None:
    assert _result("m", 3, direct, through, errors) == expected
