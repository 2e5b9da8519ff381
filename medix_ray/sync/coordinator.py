"""Weight sync between the learner group and the rollout fleet, driven by the controller.

    sync = WeightSync(learner_group, fleet, cfg.sync)
    report = sync.push(version=3)      # every live replica now serves version 3

The group is learner rank 0 plus one rank per rollout replica, formed on first use and formed
again whenever the roster of replicas changes (a replica restarted or was added): the newcomer
joins and receives the full current weights. A push runs the learner's broadcast and the
replicas' `update_weights` at the same time. With `sync.verify_checksum`, every replica's digest
of the bytes it loaded must equal the learner's digest of the bytes it sent, and all replicas'
digests of their engine parameters must agree; otherwise `SyncError`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from medix_ray.config import SyncConfig

logger = logging.getLogger(__name__)


class SyncError(RuntimeError):
    """A weight sync failed or a checksum did not match; the message names the replica."""


@dataclass
class SyncReport:
    version: int
    seconds: float
    bytes: int
    replicas: int
    reformed: bool
    checksum: str | None = None
    verified: bool = False
    per_replica: list[dict[str, Any]] = field(default_factory=list)

    @property
    def gb_per_s(self) -> float:
        return self.bytes * max(self.replicas, 1) / max(self.seconds, 1e-9) / 1e9


class WeightSync:
    def __init__(self, learner: Any, fleet: Any, cfg: SyncConfig, timeout_s: float = 600.0):
        self.learner = learner
        self.fleet = fleet
        self.cfg = cfg
        self.timeout_s = timeout_s
        self.members: list[str] = []
        self.specs: list[list[Any]] = []
        self.backend = ""
        self.formations = 0

    def reset(self) -> None:
        """Forgets the group (after a learner restart): the next push forms it again."""
        self.members = []

    def _form(self, roster: list[dict[str, Any]]) -> None:
        members = sorted(r["replica"] for r in roster)
        ranks = {rid: i + 1 for i, rid in enumerate(members)}
        world = len(members) + 1
        dtype = roster[0]["dtype"]
        payload = {
            "backend": self.cfg.backend,
            "bucket_bytes": self.cfg.bucket_mb << 20,
            "world_size": world,
            "dtype": dtype,
            "timeout_s": self.timeout_s,
        }
        opened = self.learner._command("sync_open", [payload] * self.learner.world)
        rendezvous = opened[0]["rendezvous"]
        self.backend = opened[0]["backend"]
        self.specs = opened[0]["specs"]
        cmd = self.learner.post("sync_connect", None)
        joined = self.fleet.broadcast("join_sync", ranks, rendezvous)
        self.learner.collect(cmd, "sync_connect")
        missing = set(members) - {j["replica"] for j in joined if j.get("joined")}
        if missing:
            raise SyncError(f"rollout replicas {sorted(missing)} did not join the weight-sync group")
        self.members = members
        self.formations += 1
        logger.info("weight-sync group formed: %s backend, learner + %d replicas", self.backend, len(members))

    def push(self, version: int) -> SyncReport:
        """Sends the learner's current weights to every replica; they then serve `version`."""
        start = time.monotonic()
        everyone = self.fleet.replicas()
        roster = [r for r in everyone if r.get("healthy", True)]
        if len(roster) < len(everyone):  # Serve is replacing them; they join once they come back
            logger.warning(
                "skipping unhealthy rollout replicas %s", [r["replica"] for r in everyone if r not in roster]
            )
        if not roster:
            raise SyncError("no healthy rollout replica to sync")
        reformed = sorted(r["replica"] for r in roster) != self.members
        if reformed:
            self._form(roster)
        verify = self.cfg.verify_checksum
        update_info = {
            "specs": self.specs,
            "bucket_bytes": self.cfg.bucket_mb << 20,
            "checksum": verify,
            "version": version,
        }
        cmd = self.learner.post("sync_push", [{"specs": self.specs, "checksum": verify}] * self.learner.world)
        if self.backend != "gloo":  # vLLM's nccl engine takes names, dtypes and shapes
            update_info = {
                "names": [s[0] for s in self.specs],
                "dtype_names": [s[1] for s in self.specs],
                "shapes": [s[2] for s in self.specs],
            }
        try:
            replies = self.fleet.broadcast("update_weights", update_info, version, self.members)
        finally:
            sent = self.learner.collect(cmd, "sync_push")[0]
        skipped = [r["replica"] for r in replies if r.get("skipped")]
        if skipped:  # joined the fleet after the roster was read: the next push forms the group again
            logger.warning("rollout replicas %s are not in the sync group yet", skipped)
            self.members = []
        replies = [r for r in replies if not r.get("skipped")]
        report = SyncReport(
            version=version,
            seconds=time.monotonic() - start,
            bytes=int(sent["bytes"]),
            replicas=len(replies),
            reformed=reformed,
            checksum=sent.get("checksum"),
            per_replica=replies,
        )
        if verify:
            self._verify(report, replies)
        return report

    def _verify(self, report: SyncReport, replies: list[dict[str, Any]]) -> None:
        for r in replies:
            if self.backend == "gloo" and r.get("checksum") != report.checksum:
                raise SyncError(
                    f"rollout replica {r['replica']} loaded bytes with digest {r.get('checksum')}; "
                    f"the learner sent {report.checksum}"
                )
        prints = self.fleet.broadcast("fingerprint")
        distinct = {p["fingerprint"] for p in prints}
        if len(distinct) != 1:
            raise SyncError(f"rollout replicas hold different weights after sync: {prints}")
        if any(p["version"] != report.version for p in prints):
            raise SyncError(f"rollout replicas report versions {[p['version'] for p in prints]}, not {report.version}")
        report.verified = True
