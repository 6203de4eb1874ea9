-- One rate-limit request: the generic cell rate algorithm of crates/store/src/gcra.rs, run
-- atomically on the server so that the limit holds across hosts.
-- KEYS[1]: the counter. ARGV: now_ms, cost, limit, window_ms.
-- Stored value: the theoretical arrival time (ms); TTL: until it is in the past.
-- Returns {allowed (0/1), ms to wait}.
local now, cost, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
window = math.max(window, 1)
local interval = math.max(math.floor(window / math.max(limit, 1)), 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
local new_tat = tat + interval * cost
local ahead = new_tat - now
if ahead <= window then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', math.max(ahead, 1)))
  return {1, 0}
end
return {0, ahead - window}
