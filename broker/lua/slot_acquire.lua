-- A synchronous invocation (RequestResponse, an event source mapping's batch) takes one of
-- the function's reserved-concurrency slots, shared with the async queue's in-flight events.
-- ARGV: 1 now ms, 2 slot expiry ms, 3 slot id.
-- Returns 1 (taken; always when unreserved), 0 (every reserved slot busy, or reserved 0).
redis.call('ZREMRANGEBYSCORE', KEYS[12], '-inf', ARGV[1])
local reserved = redis.call('GET', KEYS[11])
if reserved then
  reserved = tonumber(reserved)
  if reserved <= 0 or redis.call('ZCARD', KEYS[4]) + redis.call('ZCARD', KEYS[12]) >= reserved then
    return 0
  end
end
redis.call('ZADD', KEYS[12], ARGV[2], ARGV[3])
return 1
