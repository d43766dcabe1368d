-- enqueue.lua: one poll batch of the bridge into Redis, atomically (bridge.backends.redis.dispatch).
-- Sent after fifo_parts.lua, fifo_publish.lua and fifo_append.lua.
--
-- A batch spans n partitions, nq Celery queues and nf key FIFOs:
--   KEYS[1 .. n]                 each partition's published watermark: the next offset to
--                                enqueue (bridge.keys.published_watermark)
--   KEYS[n+1 .. 2n]              the same partitions' waiting counters (keys.ordered_waiting)
--   KEYS[2n+1]                   the ordered heads set (keys.ordered_heads)
--   KEYS[2n+1+q], q = 1 .. nq    the Celery queues
--   KEYS[2n+1+nq+f], f = 1 .. nf the key FIFOs (keys.ordered_queue)
--   ARGV[1] n   ARGV[2] the watermarks' TTL (s)   ARGV[3] nq   ARGV[4] head stall deadline (ms)
--   ARGV[4+i], i = 1 .. n: '1' when a record below partition i's watermark is refused (code 3)
--     instead of skipped: the watermark may be another incarnation's of the topic
--   then 7 per message, in offset order within a partition, from ARGV[5+n]:
--     w        its partition's index, 1 .. n
--     offset   its record's (kind 3: its last record's)
--     kind     0: only advance the watermark (the bridge dead-lettered the record),
--              1: push to a queue, 2: append to a key FIFO,
--              3: push a batch (consecutive records of the partition, first .. offset)
--     x        the queue's index q (kinds 1, 3) or the FIFO's index f (kind 2); 0 for kind 0
--     max_key, max_part   the limits of kind 2 (see fifo_append.lua);
--              kind 3: the batch's first offset and its count of records; 0 otherwise
--     payload  the task message (kinds 1, 3) or the FIFO element (kind 2); empty for kind 0
--
-- Transition, per message: wholly below its partition's watermark it is skipped (already
-- enqueued) or, for a strict partition, refused (code 3; so is a batch partly below it); a
-- batch partly below it (enqueued before, cut otherwise) is refused (code 4) for the caller
-- to cut again at the watermark; else it is pushed (kinds 1, 3) or appended (kind 2, which
-- may be refused: code 1 or 2), and the watermark moves past it. A refusal stops its
-- partition: its later messages are left for the next poll (or, after code 4, the caller's
-- next run), untouched. Counts are of records. Then the heads of keys that were idle are
-- published (a batched route's with the records of its key appended meanwhile), and every
-- known watermark (one that existed or moved) is SET again with the TTL.
-- Returns {enqueued, skipped, appended, then 4 per refusal: w, offset, code, x}: code 1 the
-- key is full, 2 the partition is full (x: the FIFO's index), 3 below a watermark that cannot
-- be verified (x: 0; offset: a batch's first), 4 a batch straddles the watermark (offset: its
-- first, x: the watermark).

local n, ttl, nq, deadline = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local heads = KEYS[2 * n + 1]
local marks, stopped, strict = {}, {}, {}
for i = 1, n do
  marks[i] = tonumber(redis.call('GET', KEYS[i]) or '-1')
  strict[i] = ARGV[4 + i] == '1'
end
local result = {0, 0, 0}
for j = 5 + n, #ARGV, 7 do
  local w, offset, kind, x = tonumber(ARGV[j]), tonumber(ARGV[j + 1]), ARGV[j + 2], ARGV[j + 3]
  local first, count = offset, 1
  if kind == '3' then first, count = tonumber(ARGV[j + 4]), tonumber(ARGV[j + 5]) end
  if stopped[w] then
    -- a record of this partition was refused: the later ones wait for the next poll
  elseif first < marks[w] and strict[w] then
    stopped[w] = true
    for _, v in ipairs({w, first, 3, 0}) do table.insert(result, v) end
  elseif offset < marks[w] then
    result[2] = result[2] + count
  elseif first < marks[w] then
    stopped[w] = true
    for _, v in ipairs({w, first, 4, marks[w]}) do table.insert(result, v) end
  else
    local refused = 0
    if kind == '1' or kind == '3' then
      redis.call('LPUSH', KEYS[2 * n + 1 + tonumber(x)], ARGV[j + 6])
      result[1] = result[1] + count
    elseif kind == '2' then
      refused = append(KEYS[2 * n + 1 + nq + tonumber(x)], KEYS[n + w], heads, ARGV[j + 6],
                       tonumber(ARGV[j + 4]), tonumber(ARGV[j + 5]), deadline)
      if refused == 0 then result[3] = result[3] + 1 end
    end
    if refused == 0 then
      marks[w] = offset + 1
    else
      stopped[w] = true
      for _, v in ipairs({w, offset, refused, tonumber(x)}) do table.insert(result, v) end
    end
  end
end
for _, fifo in ipairs(fresh) do
  publish(fifo, redis.call('LINDEX', fifo, 0))
end
for i = 1, n do
  if marks[i] >= 0 then redis.call('SET', KEYS[i], marks[i], 'EX', ttl) end
end
return result
