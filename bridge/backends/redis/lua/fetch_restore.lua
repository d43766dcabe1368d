-- fetch_restore.lua: put a processing list back in its queue (bridge.worker.transport; a
-- closing channel, or any worker for a channel whose heartbeat is older than the lease).
--
-- KEYS[1] a processing list   KEYS[2] its queue key   KEYS[3] the processing index
--                             (bridge.backends.redis.fetch.PROCESSING_INDEX)
-- ARGV[1] '1': drop the list from the index too
--
-- Transition: processing -> queued: every element moves back to the front of its queue, the
-- oldest fetched first in line.
-- Returns how many were moved.

local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do
  moved = moved + 1
end
if ARGV[1] == '1' then redis.call('ZREM', KEYS[3], KEYS[1]) end
return moved
