-- wrk script for benches/load.py: CORS preflights, OPTIONS with Origin and
-- Access-Control-Request-Method, which the gateway answers itself with 204.
--
--   wrk -t2 -c100 -d10s -s benches/preflight.lua http://127.0.0.1:18081/api/small
--
-- No request() function: wrk formats the request once, as it does without a script.

wrk.method = "OPTIONS"
wrk.headers["Origin"] = "https://app.example"
wrk.headers["Access-Control-Request-Method"] = "PUT"
