-- Promote due retries, reclaim expired leases, then lease up to ARGV[2] ready events,
-- never more than the function's reserved concurrency allows across all processes.
-- ARGV: 1 now ms, 2 max events, 3 lease ms, 4 lease token.
-- Returns {reserved (-1 = unreserved), next retry due ms (0 = none), ready left,
--          1 if reserved concurrency is full else 0, id1, envelope1, id2, envelope2, ...}.
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('RPUSH', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(stale) do
  redis.call('LPUSH', KEYS[2], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
end
if #stale > 0 then
  redis.call('HINCRBY', KEYS[10], 'Reclaimed', #stale)
end
local n = tonumber(ARGV[2])
local capped = 0
local reserved = redis.call('GET', KEYS[11])
if reserved then
  reserved = tonumber(reserved)
  if reserved > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[12], '-inf', now)
    local room = reserved - redis.call('ZCARD', KEYS[4]) - redis.call('ZCARD', KEYS[12])
    if room <= n then
      n = room
      capped = 1
    end
  end
else
  reserved = -1
end
local out = {reserved, 0, 0, capped}
if n > 0 then
  local ids = redis.call('LPOP', KEYS[2], n)
  if ids then
    local expiry = now + tonumber(ARGV[3])
    for _, id in ipairs(ids) do
      local envelope = redis.call('HGET', KEYS[1], id)
      if envelope then
        redis.call('ZADD', KEYS[4], expiry, id)
        redis.call('HSET', KEYS[5], id, ARGV[4])
        out[#out + 1] = id
        out[#out + 1] = envelope
      end
    end
  end
end
local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if nxt[2] then
  out[2] = tonumber(nxt[2])
end
out[3] = redis.call('LLEN', KEYS[2])
return out
