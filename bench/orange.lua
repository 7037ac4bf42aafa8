-- wrk script: realistic Orange delivery receipts (deliveryInfoNotification), POSTed to
-- /callbacks/orange/dr. Every request carries a new message id, unless it is one of the
-- ~5 % duplicates: a receipt this thread sent a little earlier, sent again byte for byte,
-- as a carrier retrying does.
--
-- Arguments (after --): run id (makes ids unique across runs), duplicate ratio.
-- done() prints one line, "WRK_JSON {...}", that bench/wrk.py reads.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("tid", #threads + 1)
   table.insert(threads, thread)
end

-- Orange's footprint: Côte d'Ivoire (10-digit national numbers), Senegal, Cameroon, Mali.
local numbers = {
   { weight = 55, format = "tel:+22507%08d", span = 100000000 },
   { weight = 20, format = "tel:+22177%07d", span = 10000000 },
   { weight = 15, format = "tel:+2376%08d", span = 100000000 },
   { weight = 10, format = "tel:+2237%07d", span = 10000000 },
}
local statuses = {
   { weight = 78, name = "DeliveredToTerminal" },
   { weight = 12, name = "DeliveredToNetwork" },
   { weight = 6, name = "DeliveryImpossible" },
   { weight = 2, name = "MessageWaiting" },
   { weight = 2, name = "DeliveryUncertain" },
}

local function pick(choices)
   local roll = math.random(100)
   for _, choice in ipairs(choices) do
      if roll <= choice.weight then
         return choice
      end
      roll = roll - choice.weight
   end
   return choices[1]
end

local run_id, dup_ratio, ring, ring_size, ring_next, sent

function init(args)
   run_id = tonumber(args[1]) or 1
   dup_ratio = tonumber(args[2]) or 0.05
   math.randomseed(run_id * 1000 + tid)
   ring, ring_size, ring_next, sent = {}, 512, 1, 0
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

local function receipt()
   counter = counter + 1
   local number = pick(numbers)
   local body = string.format(
      '{"deliveryInfoNotification":{"callbackData":"%08x-%04x-4%03x-a%03x-%012x",'
         .. '"deliveryInfo":{"address":"%s","deliveryStatus":"%s"}}}',
      run_id % 4294967296,
      tid,
      math.random(0, 4095),
      math.random(0, 4095),
      counter,
      string.format(number.format, math.random(0, number.span - 1)),
      pick(statuses).name
   )
   ring[ring_next] = body
   ring_next = ring_next % ring_size + 1
   sent = sent + 1
   return body
end

function request()
   local body
   if sent > 16 and math.random() < dup_ratio then
      body = ring[math.random(math.min(sent, ring_size))]
   else
      body = receipt()
   end
   return wrk.format(nil, nil, nil, body)
end

-- done(): the shared report line (bench/wrk_report.lua, next to this script)
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk_report.lua")
