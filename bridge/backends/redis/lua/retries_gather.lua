-- retries_gather.lua: due retries of a batched route leave Redis in one batch message
-- (bridge.backends.redis.gathered_retries.Gatherer; the bridge).
--
-- KEYS[1] the gathered retries set (bridge.keys.gathered_retries): members
--         queue \0 task \0 topic \0 retries \0 task id, scored by due time (ms since the epoch)
-- KEYS[2] their envelopes (bridge.keys.gathered_retry_envelopes): member -> envelope JSON
-- KEYS[3] the queue the batch message goes to
-- ARGV[1] the batch message (built by the bridge from the members' envelopes)
-- ARGV[2..] its members
--
-- Transition: gathered -> queued, all or nothing: if every member is still in the set, they
-- all leave it (and their envelopes) and the message is pushed (LPUSH) once; if any is gone
-- (another bridge moved it meanwhile), nothing happens. However many bridges run this at the
-- same time, each member leaves in exactly one message.
-- Returns how many members the pushed message carries (0: none pushed).

for i = 2, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    return 0
  end
end
for i = 2, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
redis.call('LPUSH', KEYS[3], ARGV[1])
return #ARGV - 1
