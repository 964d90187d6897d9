"""What holds across workers, in Redis (the broker's server): one job per VM at a time, and caps per
hypervisor host, datastore and repository.

Both expire: a worker that dies (SIGKILL, power loss) stops refreshing them, and after ``lease`` seconds
another worker may take the VM or the slot. A running job refreshes them with its heartbeat.

- A VM's lock is one key, ``genievm:vm:<provider>:<vm>``, holding the job's id (``SET NX PX``); only the
  holder extends or deletes it (compared in a script, so a lock that expired and was taken is never
  removed by its former holder).
- A cap is a sorted set, ``genievm:cap:<name>``, of the jobs holding a slot scored by when their slot
  expires; a job takes a slot when, the expired ones dropped, fewer than the cap hold one (one script, so
  two workers never both take the last slot). The cap's names are the engine's terms for what a transfer
  is limited by (``engine/limits.py`` limits one job's bandwidth; these limit how many jobs share a host,
  a datastore or a repository): ``host:<name>``, ``datastore:<name>``, ``repository:<url>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from genievm_worker.errors import BrokerUnreachableError
from genievm_worker.settings import safe_url

__all__ = ["Coordinator", "vm_key"]

_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_TAKE_SLOTS = """
local now = tonumber(ARGV[1])
local expires = tonumber(ARGV[2])
local holder = ARGV[3]
for i, key in ipairs(KEYS) do
  redis.call('zremrangebyscore', key, '-inf', now)
  if not redis.call('zscore', key, holder) and redis.call('zcard', key) >= tonumber(ARGV[3 + i]) then
    return i
  end
end
for i, key in ipairs(KEYS) do redis.call('zadd', key, expires, holder) end
return 0
"""


def vm_key(provider: str | None, vm: str) -> str:
    return f"genievm:vm:{provider or '-'}:{vm}"


def cap_key(name: str) -> str:
    return f"genievm:cap:{name}"


class Coordinator:
    """The VM locks and caps in the Redis at ``url``."""

    def __init__(self, url: str, lease: float) -> None:
        self.url = url
        self.lease_ms = int(lease * 1000)
        self.redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self._extend = self.redis.register_script(_EXTEND)
        self._release = self.redis.register_script(_RELEASE)
        self._take = self.redis.register_script(_TAKE_SLOTS)

    def close(self) -> None:
        self.redis.close()

    def lock_vm(self, key: str, job_id: str) -> bool:
        """Take the VM's lock for ``job_id`` (again, when it already holds it); False while another job has it."""
        if self._call(self.redis.set, key, job_id, nx=True, px=self.lease_ms):
            return True
        return bool(self._call(self._extend, keys=[key], args=[job_id, self.lease_ms]))

    def unlock_vm(self, key: str, job_id: str) -> None:
        self._call(self._release, keys=[key], args=[job_id])

    def take_slots(self, caps: Mapping[str, int], job_id: str) -> str | None:
        """A slot of each cap for ``job_id``, all or none: None when taken, else the name of a full cap."""
        if not caps:
            return None
        names = sorted(caps)
        now = time.time() * 1000
        full = self._call(
            self._take,
            keys=[cap_key(n) for n in names],
            args=[now, now + self.lease_ms, job_id, *[caps[n] for n in names]],
        )
        return names[int(full) - 1] if full else None

    def refresh(self, vm: str | None, caps: Mapping[str, int], job_id: str) -> None:
        """Extend the job's VM lock and slots by another lease."""
        if vm is not None:
            self._call(self._extend, keys=[vm], args=[job_id, self.lease_ms])
        expires = time.time() * 1000 + self.lease_ms
        for name in caps:
            self._call(self.redis.zadd, cap_key(name), {job_id: expires}, xx=True)

    def release_slots(self, caps: Mapping[str, int], job_id: str) -> None:
        for name in caps:
            self._call(self.redis.zrem, cap_key(name), job_id)

    def holders(self, name: str) -> list[str]:
        """The jobs that hold a slot of cap ``name`` now."""
        now = time.time() * 1000
        return [m.decode() for m in self._call(self.redis.zrangebyscore, cap_key(name), now, "+inf")]

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.exceptions.ConnectionError as exc:
            raise BrokerUnreachableError(f"the broker at {safe_url(self.url)} is unreachable ({exc})") from None
