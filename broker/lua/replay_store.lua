-- Store replayed events (sluice dlq replay) as enqueue.lua does, each with a done-mark
-- (KEYS[12 + i]) so that no event is stored twice, even after it ran and left the queue.
-- ARGV: 1 max_depth, 2 wake channel, 3 function name, 4 mark ttl ms, then triples (request
-- id, envelope, mark value). Returns -1 at the queue's cap (nothing stored), else one flag
-- per event: 1 stored now, 0 stored before (marked).
local fresh = {}
local flags = {}
for i = 1, (#ARGV - 4) / 3 do
  flags[i] = 0
  if redis.call('EXISTS', KEYS[12 + i]) == 0 then
    local at = 5 + (i - 1) * 3
    fresh[#fresh + 1] = {ARGV[at], ARGV[at + 1], KEYS[12 + i], ARGV[at + 2]}
    flags[i] = 1
  end
end
if #fresh > 0 and queue_depth() + #fresh > tonumber(ARGV[1]) then
  return -1
end
store_ready(fresh, ARGV[2], ARGV[3])
for _, event in ipairs(fresh) do
  redis.call('SET', event[3], event[4], 'PX', ARGV[4])
end
return flags
