-- ordered_park.lua: stop a key at its head (bridge.backends.redis.ordering.KeyQueues.park): its head is
-- exhausted on a park route, or its dead letter was refused by Kafka or is pending.
-- Sent after fifo_parts.lua.
--
-- KEYS[1] the key's FIFO   KEYS[2] the heads set   KEYS[3] the failing keys hash
-- KEYS[4] the parked keys hash
-- ARGV[1] the task id      ARGV[2] why (JSON, bridge.backends.redis.ordering.parked_why), or '' when the
--                          head's dead letter is pending (the bridge calls done once written)
--
-- Transition: head out -> parked (ARGV[2] is kept in the parked hash until a release), or
-- -> dead letter pending (ARGV[2] ''). Either way the key leaves the stall watch (heads) and
-- the failing hash. A task that is not the head changes nothing.
-- Returns 1: parked, 0: not the head.

if not is_head(KEYS[1], ARGV[1]) then return 0 end
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('HDEL', KEYS[3], KEYS[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[4], KEYS[1], ARGV[2]) end
return 1
