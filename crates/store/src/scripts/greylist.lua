-- Greylisting, one attempt of a triplet: the rule of crates/store/src/greylist.rs (attempt,
-- forget_after), run atomically on the server so that two hosts cannot race.
-- KEYS[1]: the triplet. ARGV: now, delay, expire (seconds).
-- Stored value: "first last passed"; TTL: how long the triplet is remembered.
-- Returns {passed (0/1), seconds to wait}.
local now, delay, expire = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function forget_after(passed)
  if passed then return expire end
  return math.min(math.max(2 * 86400, 2 * delay), math.max(expire, 1))
end
local first, passed, known = now, false, false
local v = redis.call('GET', KEYS[1])
if v then
  local f, l, p = string.match(v, '^(%d+) (%d+) ([01])$')
  if f then
    known = true
    if math.max(now - tonumber(l), 0) <= forget_after(p == '1') then
      first, passed = tonumber(f), (p == '1')
    end
  end
end
local waited = math.max(now - first, 0)
local pass = passed or (known and waited >= delay)
local wait = 0
if not pass then wait = math.max(delay - waited, 1) end
redis.call('SET', KEYS[1], string.format('%.0f %.0f %s', first, now, pass and '1' or '0'),
  'EX', forget_after(pass))
return {pass and 1 or 0, wait}
