-- fifo_parts.lua: functions the ordered-key scripts share (sent in front of them; not run alone).
--
-- A key FIFO (bridge.keys.ordered_queue) holds its records in offset order, one element each:
--   task_id \0 appended_ms \0 queue \0 task message [\0 batch]  (bridge.backends.redis.ordering.element)
-- batch, on a batched ordered route only: 'size:cut' (see fifo_publish.lua). A task message is
-- JSON, which holds no NUL byte. Its first element is the key's head: the only record of the
-- key that may run (with the records that follow it in its batch, on a batched route).
--
-- parts(el) -> task_id, task message, queue, batch (nil when the element has none)
-- is_head(fifo, task_id) -> true when task_id is the head of the FIFO named fifo.
--
-- KEYS, ARGV: none of its own. Returns: nothing; changes nothing.

local function parts(el)
  local a = string.find(el, '\0', 1, true)
  local b = string.find(el, '\0', a + 1, true)
  local c = string.find(el, '\0', b + 1, true)
  -- A message ends with '}': then there is no batch part to look for.
  local d = string.byte(el, -1) ~= 125 and string.find(el, '\0', c + 1, true)
  if d then
    return string.sub(el, 1, a - 1), string.sub(el, c + 1, d - 1), string.sub(el, b + 1, c - 1),
           string.sub(el, d + 1)
  end
  return string.sub(el, 1, a - 1), string.sub(el, c + 1), string.sub(el, b + 1, c - 1), nil
end
local function is_head(fifo, task_id)
  local head = redis.call('LINDEX', fifo, 0)
  return head and parts(head) == task_id
end
