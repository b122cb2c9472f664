// The original Node library recluster, running bench/peers/server.js as 4
// workers; SIGUSR2 reloads.
'use strict';
const path = require('path');
const recluster = require('recluster');
const cluster = recluster(path.join(__dirname, 'server.js'), { workers: 4, readyWhen: 'listening', timeout: 30 });
cluster.run();
process.on('SIGUSR2', () => cluster.reload());
process.on('SIGTERM', () => { cluster.terminate(); process.exit(0); });
