-- Shared by the queue scripts (prepended by broker/queue.py).
-- Queue KEYS, in order: 1 events, 2 ready, 3 delayed, 4 inflight, 5 leases, 6 outbox,
-- 7 outbox_leases, 8 dead, 9 dead_entries, 10 stats, 11 reserved, 12 sync slots.

local function dead_add(now, id, entry)
  redis.call('ZADD', KEYS[8], now, id)
  redis.call('HSET', KEYS[9], id, entry)
end

-- Bounded retention of the dead-letter store: drop entries past their age, then the oldest
-- beyond the count.
local function dead_trim(now, max_age_ms, max_count)
  local old = redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', now - max_age_ms, 'LIMIT', 0, 1000)
  for _, id in ipairs(old) do
    redis.call('HDEL', KEYS[9], id)
    redis.call('ZREM', KEYS[8], id)
  end
  local excess = redis.call('ZCARD', KEYS[8]) - max_count
  if excess > 0 then
    for _, id in ipairs(redis.call('ZRANGE', KEYS[8], 0, excess - 1)) do
      redis.call('HDEL', KEYS[9], id)
      redis.call('ZREM', KEYS[8], id)
    end
  end
end
