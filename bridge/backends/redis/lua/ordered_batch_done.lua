-- ordered_batch_done.lua: the first records of a key's batch are finished (bridge.backends.redis
-- .ordering.KeyQueues.batch_done; a worker, once the batch handler returned). Sent after
-- fifo_parts.lua and fifo_publish.lua.
--
-- KEYS[1] the key's FIFO   KEYS[2] its partition's waiting counter   KEYS[3] the heads set
-- KEYS[4] the failing keys hash
-- ARGV[1] the stall deadline (ms since the epoch) of the key's head from now on
-- ARGV[2] '0': the whole batch succeeded: publish the next head (as ordered_done.lua does);
--         '1': the record after these failed: it becomes the head, and its own task goes on
--         (retried, dead-lettered or parked by the worker): nothing is published
-- ARGV[3 ..] the task ids of the finished records, head first (the batch's first records)
--
-- Transition: the finished records leave the FIFO (and the counter, and the failing hash),
-- all or none: unless they are the FIFO's first records, in this order (a stale copy of the
-- batch, whose records another copy finished), nothing changes. Then the next head is
-- published with deadline ARGV[1] (ARGV[2] '0'), or only watched with it (ARGV[2] '1'), or
-- the key is idle again and leaves the heads set.
-- Returns how many records were popped (0: not the FIFO's first records).

local n = #ARGV - 2
local firsts = redis.call('LRANGE', KEYS[1], 0, n - 1)
if #firsts < n or n < 1 then return 0 end
for i = 1, n do
  if parts(firsts[i]) ~= ARGV[i + 2] then return 0 end
end
redis.call('LTRIM', KEYS[1], n, -1)
redis.call('DECRBY', KEYS[2], n)
redis.call('HDEL', KEYS[4], KEYS[1])
local nxt = redis.call('LINDEX', KEYS[1], 0)
if not nxt then
  redis.call('ZREM', KEYS[3], KEYS[1])
else
  if ARGV[2] == '0' then publish(KEYS[1], nxt) end
  redis.call('ZADD', KEYS[3], ARGV[1], KEYS[1])
end
return n
