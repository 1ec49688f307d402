-- Extend the leases this claimer still holds. ARGV: 1 new expiry ms, 2 token, then ids.
-- Returns how many leases were extended.
local extended = 0
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[5], ARGV[i]) == ARGV[2] then
    redis.call('ZADD', KEYS[4], 'XX', tonumber(ARGV[1]), ARGV[i])
    extended = extended + 1
  end
end
return extended
