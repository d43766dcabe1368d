-- ordered_done.lua: the head is finished: handled or dead-lettered (bridge.backends.redis.ordering.KeyQueues
-- .done; a worker, or the bridge once it wrote a pending dead letter). Sent after fifo_parts.lua and fifo_publish.lua.
--
-- KEYS[1] the key's FIFO   KEYS[2] its partition's waiting counter   KEYS[3] the heads set
-- KEYS[4] the failing keys hash
-- ARGV[1] the task id      ARGV[2] the next head's stall deadline (ms since the epoch)
--
-- Transition: the head leaves the FIFO (and the counter, and the failing hash); the next
-- record becomes the head and is published, with deadline ARGV[2] -- or the key is idle again
-- and leaves the heads set. A task that is not the head (a stale copy) changes nothing.
-- Returns 1: popped, 0: not the head.

if not is_head(KEYS[1], ARGV[1]) then return 0 end
redis.call('LPOP', KEYS[1])
redis.call('DECR', KEYS[2])
redis.call('HDEL', KEYS[4], KEYS[1])
local nxt = redis.call('LINDEX', KEYS[1], 0)
if nxt then
  publish(KEYS[1], nxt)
  redis.call('ZADD', KEYS[3], ARGV[2], KEYS[1])
else
  redis.call('ZREM', KEYS[3], KEYS[1])
end
return 1
