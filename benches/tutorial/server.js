// The API gateway of the Node tutorials, the thing Pylon replaces: a contender in
// benches/load.py. Written the way the tutorials write it (express, http-proxy-middleware,
// cors, helmet, morgan, an in-memory per-IP counter), with nothing tuned: one process,
// http-proxy's defaults (a new upstream connection for every request).
//
//   PORT=18089 UPSTREAM=http://127.0.0.1:18080 ACCESS_LOG=access.log node server.js

const crypto = require('crypto');
const fs = require('fs');
const express = require('express');
const cors = require('cors');
const helmet = require('helmet');
const morgan = require('morgan');
const { createProxyMiddleware } = require('http-proxy-middleware');

const PORT = process.env.PORT || 3000;
const HOST = process.env.HOST || '127.0.0.1';
const UPSTREAM = process.env.UPSTREAM || 'http://127.0.0.1:8080';
const ACCESS_LOG = process.env.ACCESS_LOG || 'access.log';

const app = express();

// security headers
app.use(helmet());

// CORS for every origin
app.use(cors());

// access log, Apache combined format, to a file
const accessLogStream = fs.createWriteStream(ACCESS_LOG, { flags: 'a' });
app.use(morgan('combined', { stream: accessLogStream }));

// a request id, to the upstream and back to the client
app.use((req, res, next) => {
  const id = req.headers['x-request-id'] || crypto.randomUUID();
  req.headers['x-request-id'] = id;
  res.setHeader('X-Request-Id', id);
  next();
});

// rate limiting: requests per client IP per window, counted in memory
const WINDOW_MS = 60 * 1000;
const MAX_REQUESTS = 1000000000; // the benchmark never reaches it
const clients = new Map();

function rateLimiter(req, res, next) {
  const now = Date.now();
  const entry = clients.get(req.ip);
  if (!entry || now - entry.start > WINDOW_MS) {
    clients.set(req.ip, { start: now, count: 1 });
    return next();
  }
  entry.count++;
  if (entry.count > MAX_REQUESTS) {
    return res.status(429).json({ message: 'Too many requests, please try again later.' });
  }
  next();
}

app.use(rateLimiter);

// /api/* goes to the upstream with /api stripped (express strips the mount path)
app.use(
  '/api',
  createProxyMiddleware({
    target: UPSTREAM,
    changeOrigin: true,
    xfwd: true, // X-Forwarded-For, -Host, -Port, -Proto
  })
);

app.use((req, res) => {
  res.status(404).json({ message: 'Route not found.' });
});

app.listen(PORT, HOST, () => {
  console.log(`gateway listening on ${HOST}:${PORT}, proxying /api to ${UPSTREAM}`);
});
