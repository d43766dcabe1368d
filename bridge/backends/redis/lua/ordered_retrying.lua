-- ordered_retrying.lua: the head failed and will retry (bridge.backends.redis.ordering.KeyQueues.retrying; a
-- worker). Sent after fifo_parts.lua.
--
-- KEYS[1] the key's FIFO   KEYS[2] the heads set   KEYS[3] the failing keys hash
-- ARGV[1] the task id      ARGV[2] the stall deadline past the retry's due time (ms)
-- ARGV[3] now (ms): when the key started failing, kept from its first failure on
--
-- Transition: head running -> head retrying: the head stays, later records keep waiting, the
-- stall deadline moves to ARGV[2]. A task that is not the head changes nothing.
-- Returns 1: recorded, 0: not the head.

if not is_head(KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
redis.call('HSETNX', KEYS[3], KEYS[1], ARGV[3])
return 1
