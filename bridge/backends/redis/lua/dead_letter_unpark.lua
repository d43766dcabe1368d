-- dead_letter_unpark.lua: forget a parked dead letter once it was redriven
-- (bridge.backends.redis.dead_letter_store.DeadLetterStore.unpark; `python -m bridge replay --parked`).
--
-- KEYS[1] the parked dead letters hash (bridge.keys.parked_dead_letters), by task id
-- KEYS[2] a queue, or '' to push nothing
-- ARGV[1] the task id   ARGV[2] the task message to push onto KEYS[2]
--
-- Transition: parked -> gone (and, with a queue, the message enqueued in the same step). A
-- task id that is not parked (any more) changes nothing: nothing is pushed.
-- Returns 1: unparked, 0: it was not parked.

local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if removed == 1 and KEYS[2] ~= '' then redis.call('LPUSH', KEYS[2], ARGV[2]) end
return removed
