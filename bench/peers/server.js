// The Node worker for the peers' runs (PM2 cluster mode, the Node
// recluster): it listens on PORT the usual way, since both share the port
// through Node's cluster module, and drains on every stop they send.
'use strict';
const http = require('http');
const server = http.createServer((req, res) => res.end(`hello from pid ${process.pid}\n`));
server.listen(Number(process.env.PORT), () => {
  if (process.send) process.send('ready'); // PM2's wait_ready
});
function drain() {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
}
process.on('SIGINT', drain);   // PM2's stop signal
process.on('SIGTERM', drain);
// The Node recluster asks a worker to go with a message.
process.on('message', (m) => { if (m && m.cmd === 'disconnect') drain(); });
