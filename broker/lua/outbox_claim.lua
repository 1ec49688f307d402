-- Take over outbox entries whose delivery lease expired (their deliverer died or stalled).
-- ARGV: 1 now ms, 2 lease ms, 3 max entries. Returns {id1, entry1, ...}.
local now = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local entry = redis.call('HGET', KEYS[6], id)
  if entry then
    redis.call('ZADD', KEYS[7], now + tonumber(ARGV[2]), id)
    out[#out + 1] = id
    out[#out + 1] = entry
  else
    redis.call('ZREM', KEYS[7], id)
  end
end
return out
