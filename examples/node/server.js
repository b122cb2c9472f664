// A recluster worker in Node: take the socket recluster passes as fd 3, say
// when ready, and drain on SIGTERM.
'use strict';
const http = require('http');
const fs = require('fs');

// LISTEN_PID says the sockets are for this very process (systemd's rule).
if (process.env.LISTEN_PID !== String(process.pid)) {
  console.error(`no socket from recluster (LISTEN_PID=${process.env.LISTEN_PID}, pid ${process.pid})`);
  process.exit(1);
}

const id = process.env.WORKER_ID;
const gen = process.env.RECLUSTER_GENERATION;

const server = http.createServer((req, res) => {
  res.end(`${process.env.GREETING || 'hello'} from node worker ${id} (generation ${gen}, pid ${process.pid})\n`);
});

// fd 3 is the first socket of LISTEN_FDS; recluster keeps it open across
// reloads, so no connection is refused while workers change.
server.listen({ fd: 3 }, () => {
  // Node cannot send a datagram to NOTIFY_SOCKET; a line on the ready fd
  // says the same.
  fs.writeSync(Number(process.env.RECLUSTER_READY_FD), 'READY=1\n');
  console.log(`node worker ${id} ready`);
});

process.on('SIGTERM', () => {
  // close() stops accepting (it closes this process's copy of the socket,
  // never shutdown(2), which would stop the other workers too) and waits
  // for requests in flight; idle keep-alive connections are closed so the
  // wait ends.
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
