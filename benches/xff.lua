-- wrk script for benches/load.py: every request carries X-Forwarded-For with one of N
-- client addresses, cycled in turn, so a gateway that trusts 127.0.0.1 sees N clients.
--
--   wrk -t2 -c100 -d10s -s benches/xff.lua http://127.0.0.1:18081/api/small -- 50000
--
-- N = 1 is the baseline: the same Lua work per request, one client. The requests are
-- formatted once in init(), so per request the script only picks the next string.

local requests = {}
local count = 1
local next_index = 0

-- number the threads so that they start at different points of the cycle
local threads = 0
function setup(thread)
  thread:set("thread_number", threads)
  threads = threads + 1
end

function init(args)
  count = tonumber(args[1] or "1") or 1
  if count < 1 then count = 1 end
  local host = wrk.headers["Host"]
  if host == nil then
    host = wrk.port and (wrk.host .. ":" .. wrk.port) or wrk.host
  end
  for k = 0, count - 1 do
    -- 10.a.b.c with base-250 digits: distinct for up to 15 million clients
    local a = math.floor(k / 62500) % 250
    local b = math.floor(k / 250) % 250
    local c = k % 250 + 1
    local ip = string.format("10.%d.%d.%d", a, b, c)
    requests[k + 1] = wrk.format(nil, nil, { ["Host"] = host, ["X-Forwarded-For"] = ip })
  end
  next_index = ((thread_number or 0) * 7919) % count
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end
