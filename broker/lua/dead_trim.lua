-- Dead-letter retention on a schedule. ARGV: 1 now ms, 2 max age ms, 3 max count.
dead_trim(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return 1
