-- Store new events and make them ready, unless the function's queue is at its cap.
-- ARGV: 1 max_depth, 2 wake channel, 3 function name, then pairs (request id, envelope).
-- Returns the number stored (an id already queued is not stored twice), or -1 at the cap.
local events = {}
for i = 4, #ARGV, 2 do
  events[#events + 1] = {ARGV[i], ARGV[i + 1]}
end
if queue_depth() + #events > tonumber(ARGV[1]) then
  return -1
end
return store_ready(events, ARGV[2], ARGV[3])
