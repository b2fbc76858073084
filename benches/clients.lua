-- wrk script for benches/cluster.py --modes clients: a crowd of N clients and one hot
-- client, told apart by X-Forwarded-For (the gateways trust 127.0.0.1), dealt round-robin
-- over G gateways.
--
--   wrk -t1 -c24 -d15s -s benches/clients.lua http://127.0.0.1:18281/api/small -- N k G H HOT
--
-- One wrk runs per gateway (k = 0 .. G-1). Every H-th request is the hot client's (address
-- HOT; H = 0: none), so it is 1/H of the traffic on every gateway whatever its answers are.
-- The others are the crowd's: the j-th crowd request of gateway k comes from client
-- (j * G + k) mod N, so taken together the gateways see clients 0, 1, 2, ... in turn, N
-- crowd requests in all reach every client once, and (with N and G coprime) each client
-- goes to every gateway in turn over G rounds. Client i is 10.a.b.c (base-250 digits,
-- distinct for up to 15 million clients). A request is formatted the first time it is
-- sent and kept, so after one round the script only picks the next string.

local requests = {}
local count = 1
local gateway = 0
local gateways = 1
local hot_every = 0
local hot
local n = 0
local j = 0
local host

function init(args)
  count = math.max(tonumber(args[1] or "1") or 1, 1)
  gateway = tonumber(args[2] or "0") or 0
  gateways = math.max(tonumber(args[3] or "1") or 1, 1)
  hot_every = tonumber(args[4] or "0") or 0
  host = wrk.headers["Host"]
  if host == nil then
    host = wrk.port and (wrk.host .. ":" .. wrk.port) or wrk.host
  end
  hot = wrk.format(nil, nil, { ["Host"] = host, ["X-Forwarded-For"] = args[5] or "172.16.0.1" })
end

function request()
  n = n + 1
  if hot_every > 0 and n % hot_every == 0 then
    return hot
  end
  local i = (j * gateways + gateway) % count
  j = j + 1
  local r = requests[i + 1]
  if r == nil then
    local a = math.floor(i / 62500) % 250
    local b = math.floor(i / 250) % 250
    local c = i % 250 + 1
    r = wrk.format(nil, nil, { ["Host"] = host, ["X-Forwarded-For"] = string.format("10.%d.%d.%d", a, b, c) })
    requests[i + 1] = r
  end
  return r
end
