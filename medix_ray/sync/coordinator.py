"""Weight sync between the learner group and the rollout fleet.

    sync = WeightSync(learner_group, fleet, cfg.sync)
    report = sync.push(version=3)      # every replica that accepted the push now serves version 3
    report.rejected                    # {replica: why} for those that refused it (they refuse requests)
    sync.resync()                      # a replica refused a request as stale: push the synced version again

The learner side is the sync endpoint of every learner rank (endpoint.py), reached through the
learner group's methods `open_sync`, `connect_sync` and `push_weights` (typed calls), under the
group's lock. The fleet calls `resync` when a replica refuses a request with StaleWeights (it
restarted, or its last push was rejected); re-syncing is this component's job, not the trainer's.

The group is learner rank 0 plus one rank per vLLM worker of every rollout replica, formed on
first use and formed again whenever the roster of replicas changes (a replica restarted or was
added; the newcomer joins and receives the full current weights) or a push was rejected (the
failure may have broken the group). A push runs the learner's broadcast and the replicas'
`update_weights` at the same time. With `sync.verify_checksum` (the default), the learner sends
each bucket's digest after it, and every replica checks each bucket before loading it
(receiver.py); a replica takes the new version only if every bucket checked and loaded. A replica
that rejected the push keeps its old version and refuses requests until a later push is accepted;
the push itself fails (`SyncError`) only when no replica accepted it, or when a replica that
accepted it reports a digest of the whole push other than the learner's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from medix_ray.config import SyncConfig
from medix_ray.sync.endpoint import SyncOpen, SyncOpened, SyncPush
from medix_ray.sync.receiver import BucketUpdate, JoinReply, PushReply
from medix_ray.sync.sender import SentPush
from medix_ray.trajectory import ReplicaInfo

logger = logging.getLogger(__name__)


class SyncError(RuntimeError):
    """A weight sync failed or a checksum did not match; the message names the replica."""


@dataclass
class SyncReport:
    version: int
    seconds: float
    bytes: int
    replicas: int  # replicas that took the new version
    reformed: bool
    checksum: str | None = None  # the learner's digest of the whole push (None without checksums)
    verified: bool = False  # every replica checked every bucket against the learner's digests
    rejected: dict[str, str] = field(default_factory=dict)  # replica -> why it rejected the push
    per_replica: list[PushReply] = field(default_factory=list)

    @property
    def gb_per_s(self) -> float:
        return self.bytes * max(self.replicas, 1) / max(self.seconds, 1e-9) / 1e9


class WeightSync:
    """`learner` is a LearnerGroup, `fleet` a RolloutFleet; `timeline` (optional) records each push as a span."""

    def __init__(self, learner: Any, fleet: Any, cfg: SyncConfig, timeline: Any = None):
        self.learner = learner
        self.fleet = fleet
        self.cfg = cfg
        self.timeline = timeline
        self.members: list[str] = []
        self.specs: list[list[Any]] = []
        self.backend = ""
        self.formations = 0
        self.synced_version = 0  # the version the fleet serves (the last accepted push)
        self.resyncs = 0
        self._step = 0  # the training step of the last push (the timeline's spans)
        fleet.on_stale = self.resync

    def _span(self, name: str, version: int):
        if self.timeline is None:
            return contextlib.nullcontext()
        return self.timeline.span("sync", name, step=self._step, version=version)

    def resync(self) -> SyncReport:
        """Pushes the synced version again: a replica refused a request as stale (it restarted, or a push
        to it was rejected); the push re-forms the group with it."""
        logger.warning("a rollout replica holds stale weights; re-syncing version %d", self.synced_version)
        self.resyncs += 1
        return self.push(self.synced_version, name="resync")

    def reset(self) -> None:
        """Forgets the group (after a learner restart or a failed push): the next push forms it again."""
        self.members = []

    def _form(self, roster: list[ReplicaInfo]) -> None:
        by_id = {r.replica: r for r in roster}
        members = sorted(by_id)
        ranks, world = {}, 1  # the learner is rank 0; each replica takes one rank per vLLM worker
        for rid in members:
            ranks[rid] = world
            world += by_id[rid].sync_ranks
        request = SyncOpen(
            backend=self.cfg.backend,
            bucket_bytes=self.cfg.bucket_mb << 20,
            world_size=world,
            dtype=roster[0].dtype,
            timeout_s=self.cfg.timeout_s,
        )
        opened: SyncOpened = self.learner.open_sync(request)
        self.backend = opened.backend
        self.specs = opened.specs
        pending = self.learner.connect_sync()
        joined: list[JoinReply] = self.fleet.broadcast("join_sync", ranks, opened.rendezvous)
        pending.result()
        missing = set(members) - {j.replica for j in joined if j.joined}
        if missing:
            raise SyncError(f"rollout replicas {sorted(missing)} did not join the weight-sync group")
        self.members = members
        self.formations += 1
        logger.info("weight-sync group formed: %s backend, learner + %d replicas", self.backend, len(members))

    def push(self, version: int, *, step: int | None = None, name: str = "push") -> SyncReport:
        """Sends the learner's current weights to every replica; those that accept them serve `version`
        (`step`: the training step, for the timeline)."""
        self._step = self._step if step is None else step
        with self.learner.lock, self._span(name, version):
            report = self._push(version)
        self.synced_version = version
        return report

    def _push(self, version: int) -> SyncReport:
        start = time.monotonic()
        everyone: list[ReplicaInfo] = self.fleet.replicas()
        roster = [r for r in everyone if r.healthy]
        if len(roster) < len(everyone):  # Serve is replacing them; they join once they come back
            logger.warning("skipping unhealthy rollout replicas %s", [r.replica for r in everyone if not r.healthy])
        if not roster:
            raise SyncError("no healthy rollout replica to sync")
        reformed = sorted(r.replica for r in roster) != self.members
        if reformed:
            self._form(roster)
        verify = self.cfg.verify_checksum
        update = BucketUpdate(self.specs, self.cfg.bucket_mb << 20, checksum=verify, version=version)
        pending = self.learner.push_weights(SyncPush(self.specs, verify))
        failure: Exception | None = None
        try:
            replies: list[PushReply] = self.fleet.broadcast("update_weights", update, self.members)
        except Exception as exc:  # noqa: BLE001 - raised below, once the learner's side has ended too
            failure = exc
        try:
            sent: SentPush = pending.first()
        except Exception as exc:  # noqa: BLE001 - e.g. the learner's broadcast timed out
            failure = failure or exc
        if failure is not None:
            self.reset()  # the group may be broken (a timeout, a dead replica): form it again next time
            raise SyncError(f"weight push of version {version} failed: {failure}") from failure
        skipped = [r.replica for r in replies if r.skipped]
        if skipped:  # joined the fleet after the roster was read: the next push forms the group again
            logger.warning("rollout replicas %s are not in the sync group yet", skipped)
            self.reset()
        replies = [r for r in replies if not r.skipped]
        accepted = [r for r in replies if r.ok]
        report = SyncReport(
            version=version,
            seconds=time.monotonic() - start,
            bytes=sent.bytes,
            replicas=len(accepted),
            reformed=reformed,
            checksum=sent.checksum,
            rejected={r.replica: r.error for r in replies if not r.ok},
            per_replica=replies,
        )
        if report.rejected:
            self.reset()
            logger.error("weight push of version %d rejected by %s", version, report.rejected)
        if not accepted:
            raise SyncError(f"no rollout replica accepted the weights of version {version}: {report.rejected}")
        for r in accepted:
            if r.version != version:
                raise SyncError(f"rollout replica {r.replica} accepted the push but serves version {r.version}")
            if verify and r.checksum != report.checksum:
                raise SyncError(
                    f"rollout replica {r.replica} received a push with digest {r.checksum}; "
                    f"the learner sent {report.checksum}"
                )
        report.verified = verify and not report.rejected
        return report
