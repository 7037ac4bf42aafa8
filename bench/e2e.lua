-- wrk script for the end-to-end run: Orange receipts at a steady rate, each for a new
-- message, and a log line per answer: "<message id> <CLOCK_REALTIME seconds> <status>".
--
-- Run with as many threads as connections (-tN -cN): each thread then has exactly one
-- connection, whose answers come back in the order of its requests, so each answer is
-- matched to its message id. Sends follow the clock (delay() waits for the next slot),
-- not the answers: a slow answer makes the next request go at once, to catch up.
--
-- Arguments (after --): run tag, total rate (requests/s), log folder, start time
-- (CLOCK_REALTIME seconds), number of threads.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])
local clock = ffi.new("bench_timespec")
local function now()
   -- CLOCK_REALTIME: the clock PostgreSQL stamps commits with, on the same machine
   ffi.C.clock_gettime(0, clock)
   return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end

local threads = {}

function setup(thread)
   thread:set("tid", #threads + 1)
   table.insert(threads, thread)
end

local statuses = {
   "DeliveredToTerminal", "DeliveredToTerminal", "DeliveredToTerminal", "DeliveredToTerminal",
   "DeliveredToTerminal", "DeliveredToTerminal", "DeliveredToTerminal", "DeliveredToTerminal",
   "DeliveredToNetwork", "DeliveryImpossible",
}
local tag, interval, first_at, log, sent, queue, head, tail, verified

function init(args)
   tag = args[1]
   local rate, folder, start, count = tonumber(args[2]), args[3], tonumber(args[4]), tonumber(args[5])
   interval = count / rate -- seconds between two requests of this thread
   first_at = start + (tid - 1) / rate -- threads take turns
   log = io.open(string.format("%s/%03d.log", folder, tid), "w")
   log:setvbuf("line")
   math.randomseed(tid)
   sent, queue, head, tail = 0, {}, 1, 0
   -- wrk calls request() once on the first thread to check the script, and never sends
   -- that request: it must not enter the queue.
   verified = tid ~= 1
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function delay()
   local wait = (first_at + sent * interval - now()) * 1000
   if wait < 0 then
      return 0
   end
   return wait
end

function request()
   if not verified then
      verified = true
      return wrk.format(nil, nil, nil, "{}")
   end
   sent = sent + 1
   local id = string.format("%s-%03d-%07d", tag, tid, sent)
   tail = tail + 1
   queue[tail] = id
   local body = string.format(
      '{"deliveryInfoNotification":{"callbackData":"%s","deliveryInfo":'
         .. '{"address":"tel:+22507%08d","deliveryStatus":"%s"}}}',
      id,
      math.random(0, 99999999),
      statuses[math.random(#statuses)]
   )
   return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
   local id = queue[head]
   queue[head] = nil
   head = head + 1
   log:write(id, " ", string.format("%.6f", now()), " ", status, "\n")
end

-- done(): the shared report line (bench/wrk_report.lua, next to this script)
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk_report.lua")
