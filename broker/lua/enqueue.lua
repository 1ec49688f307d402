-- Store new events and make them ready, unless the function's queue is at its cap.
-- ARGV: 1 max_depth, 2 wake channel, 3 function name, then pairs (request id, envelope).
-- Returns the number stored (an id already queued is not stored twice), or -1 at the cap.
local n = (#ARGV - 3) / 2
local depth = redis.call('LLEN', KEYS[2]) + redis.call('ZCARD', KEYS[3])
  + redis.call('ZCARD', KEYS[4])
if depth + n > tonumber(ARGV[1]) then
  return -1
end
local was_empty = redis.call('LLEN', KEYS[2]) == 0
local added = 0
for i = 4, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i])
    added = added + 1
  end
end
if added > 0 then
  redis.call('HINCRBY', KEYS[10], 'AsyncEventsReceived', added)
  -- Wake idle dispatchers only on the empty -> non-empty edge: with a backlog they are
  -- already claiming (or at their limits, which settles and the poll interval cover).
  if was_empty then
    redis.call('PUBLISH', ARGV[2], ARGV[3])
  end
end
return added
