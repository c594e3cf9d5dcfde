-- wrk script: every request is absolute-form ("GET http://host:port/path HTTP/1.1"), as a
-- client configured with HTTP_PROXY sends it. TARGET is the upstream authority, e.g.
-- 127.0.0.1:18081; BENCH_PATH the path (default /bench/item).
local target = os.getenv("TARGET")
local path = os.getenv("BENCH_PATH") or "/bench/item"
local req

init = function(args)
  if target == nil or target == "" then
    error("TARGET (upstream host:port) must be set")
  end
  wrk.headers["Host"] = target
  req = wrk.format("GET", "http://" .. target .. path)
end

request = function()
  return req
end
