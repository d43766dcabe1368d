-- fetch_move_first.lua: a worker's non-blocking fetch from several queues (bridge.backends.redis.fetch
-- .Fetcher; sent in full with EVAL, hence no comment in the text sent).
--
-- KEYS[1 .. n]       the queue keys, in the order the channel serves them
-- KEYS[n+1 .. 2n]    their processing lists, in the same order (n = #KEYS / 2)
-- ARGV: none.
--
-- Transition: queued -> processing: the front element (right end) of the first non-empty
-- queue moves to the front (left end) of its processing list.
-- Returns {index (0-based), element} of the queue it took from, or nil when all were empty.

local n = #KEYS / 2
for i = 1, n do
  local element = redis.call('LMOVE', KEYS[i], KEYS[n + i], 'RIGHT', 'LEFT')
  if element then return {i - 1, element} end
end
return nil
