-- fifo_append.lua: append one record to its key's FIFO (sent after fifo_parts.lua and
-- fifo_publish.lua, in front of enqueue.lua; not run alone).
--
-- append(fifo, waiting, heads, el, max_key, max_part, deadline) -> 0 | 1 | 2
--   fifo      the key's FIFO (bridge.keys.ordered_queue)
--   waiting   its partition's counter of records waiting in FIFOs (bridge.keys.ordered_waiting)
--   heads     the sorted set of keys whose head is out, scored by stall deadline (ms)
--   el        the FIFO element (see fifo_parts.lua)
--   max_key, max_part   the route's limits on records waiting per key and per partition
--   deadline  the stall deadline (ms since the epoch) of a head published now
-- KEYS, ARGV: none of its own (enqueue.lua passes these from its own).
--
-- Transition: idle -> head out (the FIFO was empty: the key enters heads with score deadline,
-- and joins fresh, whose heads the caller publishes once every record of its batch is
-- appended, so that a batched route's head carries the records that came with it), or one
-- more record waits behind the head. The partition's counter counts it.
-- fresh: the FIFOs that went from idle to head out, in that order (a table of this file's).
-- Returns 0 appended, 1 refused: the key holds max_key records, 2 refused: the partition's
-- counter is at max_part. A refusal changes nothing.

local fresh = {}
local function append(fifo, waiting, heads, el, max_key, max_part, deadline)
  local depth = redis.call('LLEN', fifo)
  if depth >= max_key then return 1 end
  if tonumber(redis.call('GET', waiting) or '0') >= max_part then return 2 end
  redis.call('RPUSH', fifo, el)
  redis.call('INCR', waiting)
  if depth == 0 then
    table.insert(fresh, fifo)
    redis.call('ZADD', heads, deadline, fifo)
  end
  return 0
end
