-- benches/load.py's upload scenario: every request a POST of a 1 MiB body
-- (wrk adds its Content-Length).
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
