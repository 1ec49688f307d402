-- Remove delivered outbox entries; keep failed deliveries in the dead-letter store.
-- ARGV: 1 now ms, 2 dead max age ms, 3 dead max count, then triples
--       (outbox id, dead-letter id or '', dead-letter entry or ''), then counter pairs
--       after a '--' separator.
local now = tonumber(ARGV[1])
local i = 4
local dead_added = false
while i <= #ARGV and ARGV[i] ~= '--' do
  redis.call('HDEL', KEYS[6], ARGV[i])
  redis.call('ZREM', KEYS[7], ARGV[i])
  if ARGV[i + 1] ~= '' then
    dead_add(now, ARGV[i + 1], ARGV[i + 2])
    dead_added = true
  end
  i = i + 3
end
if dead_added then
  dead_trim(now, tonumber(ARGV[2]), tonumber(ARGV[3]))
end
for j = i + 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[10], ARGV[j], tonumber(ARGV[j + 1]))
end
return 1
