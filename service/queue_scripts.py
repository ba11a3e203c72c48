"""The request queue's Lua scripts: each runs atomically on the Redis server, so a check and the write it guards
cannot be split by another client (`service.queue` registers and calls them)."""

from __future__ import annotations

from service.rate_limit import BUCKET_LUA

# Bounded XADD: refuse, atomically, when the backlog is at its bound.
ENQUEUE = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'r', ARGV[2], 'i', ARGV[3], 'a', ARGV[4], 'd', ARGV[5], 'x', ARGV[6], 'l', ARGV[7], 't', ARGV[8])
"""

# The same, and the request's key charged first (`service.rate_limit`): KEYS[2] its bucket, ARGV[9..11] rate, burst,
# cost. A full queue charges nothing. Returns false (full), {0, tokens x 1000, wait ms} (over the rate) or {1, tokens
# x 1000, entry id}.
ENQUEUE_CHARGED = (
    BUCKET_LUA
    + """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
local allowed, left, wait = take(KEYS[2], tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]))
if allowed == 0 then return {0, left, wait} end
local id = redis.call('XADD', KEYS[1], '*', 'r', ARGV[2], 'i', ARGV[3], 'a', ARGV[4], 'd', ARGV[5], 'x', ARGV[6],
  'l', ARGV[7], 't', ARGV[8])
return {1, left, id}
"""
)

# The queue's state for /metrics, in one round trip: backlog, entries delivered and not yet answered,
# age of the oldest entry no worker has taken (entries after the group's last delivered id), live workers.
STATE = """
local backlog = redis.call('XLEN', KEYS[1])
local pending, last = 0, '0-0'
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok then
  for _, group in ipairs(groups) do
    local info = {}
    for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
    if info['name'] == ARGV[1] then pending, last = info['pending'], info['last-delivered-id'] end
  end
end
local age_ms = 0
local oldest = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
if #oldest > 0 then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  age_ms = math.max(now_ms - tonumber(string.match(oldest[1][1], '^(%d+)')), 0)
end
local live = redis.call('ZCOUNT', KEYS[2], ARGV[2], '+inf')
return {backlog, pending, age_ms, live}
"""
