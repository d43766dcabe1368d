-- fifo_parts.lua: functions the ordered-key scripts share (sent in front of them; not run alone).
--
-- A key FIFO (bridge.keys.ordered_queue) holds its records in offset order, one element each:
--   task_id \0 appended_ms \0 queue \0 task message          (bridge.backends.redis.ordering.element)
-- Its first element is the key's head: the only record of the key that may run.
--
-- parts(el) -> task_id, task message, queue
-- publish(el): LPUSH the element's task message onto its Celery queue.
-- is_head(fifo, task_id) -> true when task_id is the head of the FIFO named fifo.
--
-- KEYS, ARGV: none of its own. Returns: nothing; changes nothing.

local function parts(el)
  local a = string.find(el, '\0', 1, true)
  local b = string.find(el, '\0', a + 1, true)
  local c = string.find(el, '\0', b + 1, true)
  return string.sub(el, 1, a - 1), string.sub(el, c + 1), string.sub(el, b + 1, c - 1)
end
local function publish(el)
  local _, message, queue = parts(el)
  redis.call('LPUSH', queue, message)
end
local function is_head(fifo, task_id)
  local head = redis.call('LINDEX', fifo, 0)
  return head and parts(head) == task_id
end
