-- fifo_publish.lua: publish a key's head (sent after fifo_parts.lua, in front of the scripts
-- that publish heads; not run alone).
--
-- publish(fifo, el): LPUSH the task message of el, the head of the FIFO named fifo, onto its
--   Celery queue. On a batched ordered route (el has a batch part 'size:cut') the message
--   carries the key's first records instead, up to size of them (those with a batch part and
--   the same queue, in FIFO order): ONE batch message, as bridge.backends.redis.dispatch
--   .Dispatcher.batched builds it (task id {head's task id}-{last offset}, argsrepr
--   Records(topic[p]@first..last, n records), the envelopes as a list). A head alone, or a
--   message not laid out as below, is published as it is.
--
-- Layout (bridge.backends.redis.ordering.element): the body of such a record's message is
-- '[[ ' .. piece .. tail, base64-encoded, where piece (its envelope's JSON padded with spaces)
-- is a multiple of 3 bytes long and cut is the length of its base64. Every part of a batch's
-- body is a multiple of 3 bytes, so the batch's base64 is the concatenation of its parts':
--   '[[[' (W1tb) .. piece 1 .. (',  ' (LCAg) .. piece k)* .. ']  ' (XSAg) .. tail
-- The rest of the head's message is kept, with its task id, argsrepr and delivery tag replaced.
--
-- KEYS, ARGV: none of its own. Returns: nothing.

local function replaced(s, old, new)
  local out, i = {}, 1
  while true do
    local a, b = string.find(s, old, i, true)
    if not a then break end
    table.insert(out, string.sub(s, i, a - 1))
    table.insert(out, new)
    i = b + 1
  end
  table.insert(out, string.sub(s, i))
  return table.concat(out), #out > 1
end
local function body_at(message)
  local s = string.find(message, '"body": "', 1, true)
  if not s then return nil end
  local e = string.find(message, '"', s + 9, true)
  return s + 9, e - 1
end
local function string_end(s, from)  -- the closing quote of the JSON string opened before from
  local i = from
  while true do
    local q = string.find(s, '"', i, true)
    local back = 0
    while string.sub(s, q - back - 1, q - back - 1) == '\\' do back = back + 1 end
    if back % 2 == 0 then return q end
    i = q + 1
  end
end
local function offset_of(task_id)
  return string.match(task_id, ':(%d+)$')
end
-- The batch message of the records ids[1..n] (pieces: their base64 pieces) in the head's
-- message head_msg (body from s to f, its piece cut long), or nil if it is not laid out so.
local function batch_message(head_msg, s, f, cut, ids, pieces)
  local n = #ids
  local first, last = offset_of(ids[1]), offset_of(ids[n])
  local body = 'W1tb' .. table.concat(pieces, 'LCAg') .. 'XSAg' .. string.sub(head_msg, s + 4 + cut, f)
  local rest, found = replaced(string.sub(head_msg, f + 1), '"' .. ids[1] .. '"',
                               '"' .. ids[1] .. '-' .. last .. '"')
  local r = string.find(rest, '"argsrepr": "Record(', 1, true)
  local tag = string.find(rest, '"delivery_tag": "', 1, true)
  if not (found and first and last and r and tag) then return nil end
  local close = string_end(rest, r + 13)
  local at = string.find(rest, ']@', r + 13, true)
  if not at or at > close then return nil end
  local repr = 'Records(' .. string.sub(rest, r + 20, at) .. '@' .. first .. '..' .. last ..
               ', ' .. n .. ' records)'
  rest = string.sub(rest, 1, r + 12) .. repr .. string.sub(rest, close)
  tag = string.find(rest, '"delivery_tag": "', 1, true)
  local tag_end = string.find(rest, '"', tag + 17, true)
  rest = string.sub(rest, 1, tag_end - 1) .. '-' .. n .. string.sub(rest, tag_end)
  return string.sub(head_msg, 1, s - 1) .. body .. rest
end
local function publish(fifo, el)
  local task_id, message, queue, batch = parts(el)
  local size, cut = string.match(batch or '', '^(%d+):(%d+)$')
  size, cut = tonumber(size), tonumber(cut)
  local s, f = body_at(message)
  if size and size > 1 and s then
    local ids, pieces = {}, {}
    for _, e in ipairs(redis.call('LRANGE', fifo, 0, size - 1)) do
      local t, m, q, b = parts(e)
      local c = tonumber(string.match(b or '', ':(%d+)$'))
      local ms = body_at(m)
      if not (c and ms and q == queue) then break end
      table.insert(ids, t)
      table.insert(pieces, string.sub(m, ms + 4, ms + 3 + c))
    end
    if #ids > 1 and ids[1] == task_id then
      message = batch_message(message, s, f, cut, ids, pieces) or message
    end
  end
  redis.call('LPUSH', queue, message)
end
