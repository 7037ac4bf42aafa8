-- wrk script: GET /v1/optouts/{e164} for random numbers, most of them on the suppression
-- list that bench/optouts.py imported (+22507NNNNNNNN from a first number on).
--
-- Arguments (after --): first national number (8 digits), how many were imported, the
-- share of checks for numbers never seen (answered "not suppressed" from no row).

local first, count, unknown

function init(args)
   first, count, unknown = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
   math.randomseed(os.time())
end

function request()
   local n = math.random(0, count - 1)
   if math.random() < unknown then
      n = n + count -- past the imported range: never seen
   end
   return wrk.format("GET", string.format("/v1/optouts/+22507%08d", first + n))
end

-- done(): the shared report line (bench/wrk_report.lua, next to this script)
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk_report.lua")
