-- Apply the dispatcher's decisions for events whose lease the caller still holds (the
-- op's token matches the event's lease token).
-- ARGV: 1 now ms, 2 (unused), 3 dead max age ms, 4 dead max count, 5 outbox lease ms,
--       6 number of ops, 7 wake channel, 8 function name, then per op 6 fields
--       (op, id, a, b, token, counters).
-- ops: retry (a = envelope, b = due ms) | finish (a = outbox entry or '', b = dead-letter
--      entry or '') | release (back to the front of ready; a, b unused).
-- counters: "Name=n,Name=n" applied to the stats hash only when the op is applied.
-- Returns one 1 (applied) or 0 (lease lost to another claimer) per op.
local now = tonumber(ARGV[1])
local nops = tonumber(ARGV[6])
local results = {}
local dead_added = false
for i = 0, nops - 1 do
  local base = 9 + i * 6
  local op, id, a, b = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  if redis.call('HGET', KEYS[5], id) == ARGV[base + 4] then
    redis.call('ZREM', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
    if op == 'retry' then
      redis.call('HSET', KEYS[1], id, a)
      redis.call('ZADD', KEYS[3], tonumber(b), id)
    elseif op == 'finish' then
      redis.call('HDEL', KEYS[1], id)
      if a ~= '' then
        redis.call('HSET', KEYS[6], id, a)
        redis.call('ZADD', KEYS[7], now + tonumber(ARGV[5]), id)
      end
      if b ~= '' then
        dead_add(now, id, b)
        dead_added = true
      end
    else
      redis.call('LPUSH', KEYS[2], id)
    end
    for name, n in string.gmatch(ARGV[base + 5], '([%w_]+)=(%d+)') do
      redis.call('HINCRBY', KEYS[10], name, tonumber(n))
    end
    results[#results + 1] = 1
  else
    results[#results + 1] = 0
  end
end
if dead_added then
  dead_trim(now, tonumber(ARGV[3]), tonumber(ARGV[4]))
end
-- Slots of a reserved function were freed: wake every process, not only this one, so that
-- all of them get a fair chance at the function's concurrency.
local reserved = tonumber(redis.call('GET', KEYS[11]) or '0')
if reserved > 0 and redis.call('LLEN', KEYS[2]) > 0 then
  redis.call('PUBLISH', ARGV[7], ARGV[8])
end
return results
