-- ordered_republish.lua: the bridge's stall watchdog (bridge.backends.redis.ordering.KeyQueues
-- .republish_stalled). Sent after fifo_parts.lua and fifo_publish.lua.
--
-- KEYS[1] the heads set (key FIFOs scored by stall deadline, ms)
-- ARGV[1] now (ms)   ARGV[2] the new stall deadline (ms)   ARGV[3] at most this many keys
--
-- Transition: head out, deadline passed (its message presumed lost) -> head out again: its
-- message is published again, deadline ARGV[2]. A FIFO in the set that is empty leaves it.
-- Returns the FIFOs whose deadline had passed (published again or dropped from the set).

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, fifo in ipairs(due) do
  local head = redis.call('LINDEX', fifo, 0)
  if head then
    publish(fifo, head)
    redis.call('ZADD', KEYS[1], ARGV[2], fifo)
  else
    redis.call('ZREM', KEYS[1], fifo)
  end
end
return due
