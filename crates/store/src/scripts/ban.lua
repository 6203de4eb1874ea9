-- One failed AUTH: the rule of crates/store/src/bans.rs (failure), run atomically on the
-- server so that failures on every host add up.
-- KEYS[1]: the client address. ARGV: now_ms, limit, ban_ms.
-- Stored hash: failures, last (ms), banned (0/1); TTL: ban_ms after the last failure.
-- Returns {banned (0/1), banned by this failure (0/1)}.
local now, limit, ban = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'failures', 'last', 'banned')
local failures, last, banned = tonumber(v[1]), tonumber(v[2]), v[3] == '1'
if not failures or not last or last + ban <= now then
  failures, banned = 0, false
end
failures = failures + 1
local newly = failures >= limit and not banned
if newly then banned = true end
redis.call('HSET', KEYS[1], 'failures', failures, 'last', string.format('%.0f', now),
  'banned', banned and '1' or '0')
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.max(ban, 1)))
return {banned and 1 or 0, newly and 1 or 0}
