"""A lease with a fencing token: one holder at a time of a partition's work, taken over by a
waiting one when the holder stops renewing it (it died, or lost Redis).

The lease key holds ``"<fencing token>:<owner>"`` with a TTL; the fencing token comes from the
partition's counter (``INCR``), so every new holder's token is larger than any before. A holder
checks its lease inside each transaction it writes (``WATCH`` on the lease key, value compared):
a holder whose lease expired and was taken writes nothing, even if it does not know it yet.
Both keys are the partition's, so each script touches one hash slot.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import redis

# KEYS = lease, fence; ARGV = owner, TTL ms. Returns the new lease value, or nil when another
# owner holds it (the same owner, which lost track of it, takes it again with a new token).
_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, -string.len(ARGV[1]) - 1) ~= ':' .. ARGV[1] then return false end
local token = redis.call('INCR', KEYS[2]) .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
"""
# KEYS = lease; ARGV = lease value, TTL ms. Returns 1 if renewed, 0 if the lease is not ours.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
# KEYS = lease; ARGV = lease value. Deletes the lease if it is ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class Lease:
    """``owner``'s lease on ``key`` (fencing counter ``fence_key``), ``ttl_ms`` long, renewed
    after a third of it."""

    client: redis.Redis
    key: str
    fence_key: str
    owner: str
    ttl_ms: int
    value: bytes | None = None  # "<token>:<owner>" while held
    renewed_at: float = field(default=-math.inf)  # monotonic seconds

    @property
    def held(self) -> bool:
        return self.value is not None

    @property
    def token(self) -> int:
        """The fencing token of the lease held (0 when none)."""
        return int(self.value.split(b":", 1)[0]) if self.value else 0

    def keep(self, now: float | None = None) -> bool:
        """Take the lease if free, renew it when due; whether it is held now."""
        now = time.monotonic() if now is None else now
        if self.value is None:
            return self._acquire(now)
        if now - self.renewed_at >= self.ttl_ms / 3000:
            if not self.client.eval(_RENEW, 1, self.key, self.value, self.ttl_ms):
                self.value = None
                return False
            self.renewed_at = now
        return True

    def _acquire(self, now: float) -> bool:
        value = self.client.eval(_ACQUIRE, 2, self.key, self.fence_key, self.owner, self.ttl_ms)
        if value is None:
            return False
        self.value = value if isinstance(value, bytes) else str(value).encode()
        self.renewed_at = now
        return True

    def release(self) -> None:
        """Give the lease up (another waiting holder takes it at once)."""
        if self.value is not None:
            self.client.eval(_RELEASE, 1, self.key, self.value)
            self.value = None
