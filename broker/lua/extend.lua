-- Extend the leases the caller still holds. ARGV: 1 new expiry ms, then pairs
-- (request id, lease token). Returns how many leases were extended.
local extended = 0
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[5], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[4], 'XX', tonumber(ARGV[1]), ARGV[i])
    extended = extended + 1
  end
end
return extended
