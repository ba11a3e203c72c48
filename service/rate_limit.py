"""Per-key rate limits that hold across every API process and host: a token bucket per key, kept in Redis.

A Lua function refills the key's bucket for the time since its last request
(Redis's clock, so API hosts whose clocks differ agree), takes the request's
cost if the bucket holds it, and answers what the IETF draft's ``RateLimit``
headers say: what is left, and when a refused request may try again. Run in a
script, it is atomic: two API processes taking from the same bucket at once
never both get the last token. A scoring request pays no round trip of its
own for it: the enqueue's script charges the bucket before its XADD
(`service.queue`), because a Redis round trip costs the API more CPU (about
0.1 ms) than the check's whole budget (``make bench`` shows both).

The bucket is a hash at ``{prefix}:ratelimit:{name}``; ``name`` is a key's
name from the key file (`service.keys`), never request data. It expires once
it would be full again, so idle keys cost Redis nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis

KEY_FORMAT = "{prefix}:ratelimit:{name}"

# `take(bucket, rate, burst, cost)`: refill for the time since the bucket's last use (Redis's clock), take ``cost``
# if it is there; returns allowed (0/1), tokens left x 1000, ms to wait. A function, so that the enqueue's script
# (`service.queue`) can charge a request's key in the same round trip as its XADD.
BUCKET_LUA = """
local function take(bucket, rate, burst, cost)
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  local state = redis.call('HMGET', bucket, 'tokens', 'at')
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if tokens == nil or at == nil then tokens, at = burst, now end
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
  local allowed, wait = 0, 0
  if tokens >= cost then
    tokens, allowed = tokens - cost, 1
  else
    wait = math.ceil((cost - tokens) * 1000 / rate)
  end
  redis.call('HSET', bucket, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', bucket, math.ceil((burst - tokens) * 1000 / rate) + 1000)
  return allowed, math.floor(tokens * 1000), wait
end
"""

# KEYS[1] the bucket; ARGV: rate (tokens/s), burst (capacity), cost.
_TAKE = (
    BUCKET_LUA
    + """
local allowed, left, wait = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return {allowed, left, wait}
"""
)


@dataclass(frozen=True)
class Charge:
    """What a request costs its key: the bucket (by the key's name) and its limits."""

    name: str
    rate_per_s: float
    burst: int
    cost: int = 1

    def bucket(self, prefix: str) -> str:
        return KEY_FORMAT.format(prefix=prefix, name=self.name)

    def args(self) -> list:
        return [self.rate_per_s, self.burst, self.cost]


@dataclass(frozen=True)
class Decision:
    """One request's answer from its key's bucket."""

    allowed: bool
    remaining: int  # whole requests the bucket holds now
    retry_after_s: int  # when refused: seconds until the request would be allowed (at least 1)
    reset_s: int  # seconds until the bucket is full again
    rate_per_s: float
    burst: int

    @classmethod
    def of(cls, charge: Charge, allowed: int, left_milli: int, wait_ms: int) -> Decision:
        """From what the bucket's script returned."""
        tokens = int(left_milli) / 1000
        return cls(
            allowed=bool(allowed),
            remaining=int(tokens),
            retry_after_s=max(1, math.ceil(int(wait_ms) / 1000)),
            reset_s=math.ceil((charge.burst - tokens) / charge.rate_per_s),
            rate_per_s=charge.rate_per_s,
            burst=charge.burst,
        )

    def headers(self) -> dict[str, str]:
        """``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers), ``Retry-After`` when refused.

        The policy's quota is the burst over the window in which the rate refills it.
        """
        window = max(1, math.ceil(self.burst / self.rate_per_s))
        out = {
            "RateLimit-Policy": f'"key";q={self.burst};w={window}',
            "RateLimit": f'"key";r={self.remaining};t={self.reset_s}',
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after_s)
        return out


class RateLimitExceeded(Exception):
    """A request over its key's rate (raised by `RateLimiter.take`'s callers and `service.queue`'s charged enqueue)."""

    def __init__(self, charge: Charge, decision: Decision):
        super().__init__(f"key {charge.name!r} is over its rate ({charge.rate_per_s:g}/s, burst {charge.burst})")
        self.charge = charge
        self.decision = decision


class RateLimiter:
    """The token buckets of one deployment's keys (``prefix``), in the Redis of its queue: for requests that queue
    nothing (model metadata); a scoring request's key is charged by its enqueue (`service.queue`)."""

    def __init__(self, connection: redis.Redis, prefix: str):
        self.prefix = prefix
        self._take = connection.register_script(_TAKE)

    def take(self, charge: Charge) -> Decision:
        """Take ``charge.cost`` tokens from its bucket if it holds them (raises redis' errors: the caller answers 503)."""
        return Decision.of(charge, *self._take(keys=[charge.bucket(self.prefix)], args=charge.args()))
