"""A client of the reward service's HTTP API (`POST /v1/rewards`), for trainers outside the cluster.

    client = RewardServiceClient("http://127.0.0.1:8000")
    breakdowns = client.score(items)

The bearer token, if the service wants one, is read from the environment variable named by
`token_env` and never logged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import httpx

from medix_ray.rewards.composite import RewardBreakdown, RewardItem


class RewardServiceError(RuntimeError):
    """The reward service rejected a request or could not be reached; the message says which and why."""


class RewardServiceClient:
    def __init__(
        self, url: str, *, token_env: str = "MEDIX_RAY_SERVE_TOKEN", timeout_s: float = 600.0, batch_size: int = 1024
    ):
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        token = os.environ.get(token_env, "")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(headers=headers, timeout=timeout_s)

    def score(self, items: Sequence[RewardItem]) -> list[RewardBreakdown]:
        """Returns one breakdown per item, in order (sent in batches of `batch_size`)."""
        out: list[RewardBreakdown] = []
        for lo in range(0, len(items), self.batch_size):
            payload = {"items": [vars(i) for i in items[lo : lo + self.batch_size]]}
            try:
                response = self._client.post(f"{self.url}/v1/rewards", json=payload)
            except httpx.HTTPError as exc:
                raise RewardServiceError(f"reward service at {self.url} unreachable: {exc}") from exc
            if response.status_code != 200:
                raise RewardServiceError(
                    f"reward service at {self.url} answered {response.status_code}: {response.text[:500]}"
                )
            out.extend(RewardBreakdown(**r) for r in response.json()["results"])
        return out

    def healthy(self) -> bool:
        try:
            return self._client.get(f"{self.url}/healthz").status_code == 200
        except httpx.HTTPError:
            return False
