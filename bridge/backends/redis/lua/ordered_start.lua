-- ordered_start.lua: may this task run? (bridge.backends.redis.ordering.KeyQueues.start; a worker, before the
-- handler). Sent after fifo_parts.lua.
--
-- KEYS[1] the key's FIFO   KEYS[2] the ordered heads set   KEYS[3] the parked keys hash
-- ARGV[1] the task id      ARGV[2] the head's new stall deadline (ms since the epoch)
--
-- Transition: head out (queued or due to retry) -> head running: its stall deadline becomes
-- ARGV[2]. A task that is not its key's head (a stale copy of an earlier head) or whose key is
-- parked changes nothing.
-- Returns 1: run it, 0: drop it.

if not is_head(KEYS[1], ARGV[1]) or redis.call('HEXISTS', KEYS[3], KEYS[1]) == 1 then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
return 1
