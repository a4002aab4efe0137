"""Admission in Redis, as Lua run atomically: a queue place is reserved before an upload
is decoded (RESERVE) and spent when its job is added (ADMIT_RESERVED), so the stream and
the places together never hold more than `max_queue` jobs across gateways."""

# KEYS: stream, places. ARGV: limit, count, ttl_ms, member prefix. Drops expired places,
# then sets aside `count` more if the stream (queued and in-flight jobs) and the places
# leave room under `limit` (max_queue, or fewer when the deadline allows fewer ahead).
# Returns `count`, or -(1 + the jobs and places counted) when refused.
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local count = tonumber(ARGV[2])
local used = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if used + count > tonumber(ARGV[1]) then return -1 - used end
local ttl = tonumber(ARGV[3])
for i = 1, count do redis.call('ZADD', KEYS[2], now + ttl, ARGV[4] .. i) end
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return count
"""
# KEYS: stream, places. ARGV: max_queue, header, tensor, place ('' for none). A job in
# its (unexpired) place is added; any other only if there is room beside the places.
ADMIT_RESERVED = """
if ARGV[4] == '' or redis.call('ZREM', KEYS[2], ARGV[4]) == 0 then
  local used = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
  if used >= tonumber(ARGV[1]) then return false end
end
return redis.call('XADD', KEYS[1], '*', 'header', ARGV[2], 'tensor', ARGV[3])
"""
