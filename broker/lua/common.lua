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

-- The queue's depth: ready, delayed and in flight.
local function queue_depth()
  return redis.call('LLEN', KEYS[2]) + redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4])
end

-- Store events (a list of {request id, envelope}) and make them ready; an id already in the
-- queue is not stored twice. Wakes idle dispatchers only on the empty -> non-empty edge:
-- with a backlog they are already claiming (or at their limits, which settles and the poll
-- interval cover). Returns the number stored.
local function store_ready(events, wake_channel, function_name)
  local was_empty = redis.call('LLEN', KEYS[2]) == 0
  local added = 0
  for _, event in ipairs(events) do
    if redis.call('HSETNX', KEYS[1], event[1], event[2]) == 1 then
      redis.call('RPUSH', KEYS[2], event[1])
      added = added + 1
    end
  end
  if added > 0 then
    redis.call('HINCRBY', KEYS[10], 'AsyncEventsReceived', added)
    if was_empty then
      redis.call('PUBLISH', wake_channel, function_name)
    end
  end
  return added
end
