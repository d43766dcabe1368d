-- ordered_release.lua: an operator lets a parked key go on (bridge.backends.redis.ordering.KeyQueues.release;
-- `python -m bridge release`). Sent after fifo_parts.lua and fifo_publish.lua.
--
-- KEYS[1] the key's FIFO   KEYS[2] the heads set   KEYS[3] the parked keys hash
-- KEYS[4] the head's partition's waiting counter
-- ARGV[1] the head's task id (as the operator saw it)   ARGV[2] 'resume' | 'skip'
-- ARGV[3] the stall deadline of the head published now (ms since the epoch)
--
-- Transition: parked -> head out: resume publishes the same head again; skip drops it (the
-- caller dead-lettered it) and publishes the next record, or leaves the key idle. A key that
-- is not parked, or parked at another head, changes nothing.
-- Returns 1: released, 0: not parked at ARGV[1].

if redis.call('HEXISTS', KEYS[3], KEYS[1]) == 0 or not is_head(KEYS[1], ARGV[1]) then
  return 0
end
redis.call('HDEL', KEYS[3], KEYS[1])
if ARGV[2] == 'skip' then
  redis.call('LPOP', KEYS[1])
  redis.call('DECR', KEYS[4])
end
local head = redis.call('LINDEX', KEYS[1], 0)
if head then
  publish(KEYS[1], head)
  redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
end
return 1
