-- retries_move_due.lua: delayed retries whose time has come go to their queues
-- (bridge.backends.redis.retries.Scheduler.move_due; the bridge).
--
-- KEYS[1] the delayed retries set (bridge.keys.delayed_retries): members
--         queue \0 task message, scored by due time (ms since the epoch)
-- ARGV[1] now (ms)   ARGV[2] at most this many
--
-- Transition: delayed -> queued: each due message is pushed (LPUSH) onto its queue and leaves
-- the set, the earliest due first, once however many bridges run this at the same time.
-- Returns how many were moved.

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  local sep = string.find(member, '\0', 1, true)
  redis.call('LPUSH', string.sub(member, 1, sep - 1), string.sub(member, sep + 1))
  redis.call('ZREM', KEYS[1], member)
end
return #due
