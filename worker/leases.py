"""Leases on held work: the Lua scripts that renew, acknowledge, hand back and reclaim
stream entries, each owner-checked and atomic in Redis.

Why scripts: `XCLAIM` with a low min-idle steals an entry whatever its owner, and `XACK`
ignores the consumer, so "is this still mine?" and the action must be one step. A worker
that lost an entry (reclaimed while it stalled) can then neither renew it nor answer it:
only the current owner answers, exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

# KEYS[1] stream; ARGV group, consumer, entry ids. Renews (resets the idle time of) the
# entries this consumer still owns; JUSTID, so the delivery count is untouched.
RENEW = """
local renewed = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local owned = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if owned[1] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    renewed[#renewed + 1] = id
  end
end
return renewed
"""

# KEYS[1] stream, KEYS[2] dead letters, KEYS[2 + i] reply list of answer i.
# ARGV group, consumer, reply TTL, dead-letter maxlen, then per answer: entry id, reply
# (may be empty), dead-letter header ('' = not dead-lettered), dead-letter reason.
# Publishes, acknowledges and deletes the entries this consumer still owns.
ACK = """
local acked = {}
for i = 1, #KEYS - 2 do
  local at = 4 + (i - 1) * 4
  local id, reply, header, reason = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local owned = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if owned[1] then
    if header ~= '' then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'header', header,
                 'reason', reason, 'entry', id, 'worker', ARGV[2])
    end
    if reply ~= '' then
      redis.call('RPUSH', KEYS[2 + i], reply)
      redis.call('EXPIRE', KEYS[2 + i], ARGV[3])
    end
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
    acked[#acked + 1] = id
  end
end
return acked
"""

# KEYS[1] stream; ARGV group, consumer, idle ms, entry ids. Makes owned entries look
# idle for `idle ms`, so any worker reclaims them on its next pass.
HAND_BACK = """
local handed = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local owned = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if owned[1] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[3], 'JUSTID')
    handed[#handed + 1] = id
  end
end
return handed
"""

# KEYS[1] stream; ARGV group, consumer, min idle ms, count. Claims up to `count` entries
# idle at least `min idle` (their owner died, stopped or handed them back), oldest first,
# returning {id, deliveries, fields} for each; drops pending records of deleted entries.
RECLAIM = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', ARGV[4])
local claimed = {}
for _, item in ipairs(pending) do
  local got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], item[1])
  if got[1] and got[1] ~= false and type(got[1][2]) == 'table' then
    claimed[#claimed + 1] = {item[1], item[4] + 1, got[1][2]}
  elseif not got[1] then
    redis.call('XACK', KEYS[1], ARGV[1], item[1])
  end
end
return claimed
"""


@dataclass(frozen=True, slots=True)
class Answer:
    """What to do with one held entry: publish `reply` (may be empty) to `reply_to`, and
    dead-letter it with `dead_header`/`reason` when `dead_header` is set."""

    entry_id: bytes
    reply_to: str
    reply: bytes
    dead_header: bytes = b""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Claimed:
    entry_id: bytes
    deliveries: int
    fields: dict[bytes, bytes]


class Leases:
    """One stream's leases for one consumer."""

    def __init__(
        self,
        client: Redis,
        stream: str,
        dead_letters: str,
        group: str,
        consumer: str,
        *,
        reply_ttl_s: int,
        dead_letter_maxlen: int,
    ) -> None:
        self.stream = stream
        self.dead_letters = dead_letters
        self.group = group
        self.consumer = consumer
        self.reply_ttl_s = reply_ttl_s
        self.dead_letter_maxlen = dead_letter_maxlen
        self._renew = client.register_script(RENEW)
        self._ack = client.register_script(ACK)
        self._hand_back = client.register_script(HAND_BACK)
        self._reclaim = client.register_script(RECLAIM)

    async def renew(self, entry_ids: Sequence[bytes]) -> set[bytes]:
        """Renew these entries' leases; returns the ones still ours."""
        if not entry_ids:
            return set()
        renewed = await self._renew(
            keys=[self.stream], args=[self.group, self.consumer, *entry_ids]
        )
        return set(cast(list[bytes], renewed))

    async def answer(self, answers: Sequence[Answer]) -> set[bytes]:
        """Publish, acknowledge and delete; returns the entries answered (those still ours)."""
        if not answers:
            return set()
        args: list[bytes | str | int] = [
            self.group,
            self.consumer,
            self.reply_ttl_s,
            self.dead_letter_maxlen,
        ]
        for a in answers:
            args += [a.entry_id, a.reply, a.dead_header, a.reason]
        keys = [self.stream, self.dead_letters, *(a.reply_to for a in answers)]
        return set(cast(list[bytes], await self._ack(keys=keys, args=args)))

    async def hand_back(self, entry_ids: Sequence[bytes], idle_ms: int) -> set[bytes]:
        """Make these entries (if still ours) reclaimable by any worker at once."""
        if not entry_ids:
            return set()
        handed = await self._hand_back(
            keys=[self.stream], args=[self.group, self.consumer, idle_ms, *entry_ids]
        )
        return set(cast(list[bytes], handed))

    async def reclaim(self, min_idle_ms: int, count: int) -> list[Claimed]:
        """Claim entries whose lease lapsed (oldest first), with their delivery counts."""
        found = await self._reclaim(
            keys=[self.stream], args=[self.group, self.consumer, min_idle_ms, count]
        )
        claimed = []
        for entry_id, deliveries, flat in cast(list[list[object]], found):
            pairs = cast(list[bytes], flat)
            fields = dict(zip(pairs[::2], pairs[1::2], strict=True))
            claimed.append(Claimed(cast(bytes, entry_id), int(cast(int, deliveries)), fields))
        return claimed
