// An identity-like service logging with pino and pino-http, as users run them: one JSON line per request, 4xx at
// warn and 5xx at error, the reason in pino-http's own `err` object. The clock is the X-Fake-Time header (epoch ms),
// so a test can lay an hour of traffic into the log in seconds; everything else is the libraries' own output.
// env: LOG_FILE, PORT. GET /token?status=401&reason=...  answers with that status and reason.
const http = require('http');
const pino = require('pino');
let clock = Date.now();
const logger = pino({ timestamp: () => `,"time":${clock}` }, pino.destination({ dest: process.env.LOG_FILE, sync: true }));
const httpLogger = require('pino-http')({
  logger,
  customLogLevel: (req, res, err) => (err || res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'warn' : 'info'),
});
http.createServer((req, res) => {
  clock = Number(req.headers['x-fake-time'] || Date.now());
  httpLogger(req, res);
  const url = new URL(req.url, 'http://identity');
  const status = Number(url.searchParams.get('status') || 200);
  if (status >= 400) {  // an error class of that name, as jsonwebtoken's JsonWebTokenError would be
    const name = url.searchParams.get('type') || 'AuthError';
    const Cls = { [name]: class extends Error {} }[name];
    res.err = new Cls(url.searchParams.get('reason') || `status ${status}`);
  }
  res.statusCode = status;
  res.end(JSON.stringify({ status }));
}).listen(Number(process.env.PORT), '127.0.0.1', () => console.log('ready'));
