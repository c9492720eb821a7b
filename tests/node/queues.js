// Queue data made by BullMQ and Bull themselves, for the tests: node queues.js LIB ROLE QUEUE [ARGS...]
// LIB is bullmq or bull; the Redis URL (it holds a password) comes from $QUEUE_URL, never from argv.
//   add N [OPTS_JSON] [PAYLOAD_BYTES]      add N jobs (named "job") with the given job options
//   work MODE CONCURRENCY LOCK_MS STALLED_MS   a worker; MODE ok (50 ms jobs), hang (never finish), fail (throw)
//   produce RATE [PAYLOAD_BYTES]           add jobs at RATE per second until killed; errors go to stderr
//   fill PAYLOAD_BYTES                     add jobs until Redis refuses 20 in a row; prints {added, errors, lastError}
//   counts                                 prints the library's own getJobCounts()
//   pause | resume                         pauses or resumes the queue (globally)
const [lib, role, queue, ...args] = process.argv.slice(2);
const url = process.env.QUEUE_URL;

function open() {
  if (lib === 'bullmq') {
    const { Queue } = require('bullmq');
    const IORedis = require('ioredis');
    return new Queue(queue, { connection: new IORedis(url, { maxRetriesPerRequest: null }) });
  }
  const Queue = require('bull');
  return new Queue(queue, url);
}

function processor(mode) {
  return async () => {
    if (mode === 'hang') await new Promise(() => {});
    if (mode === 'fail') throw new Error('connect ECONNREFUSED 10.0.0.7:443');
    await new Promise(r => setTimeout(r, 50));
    return 'ok';
  };
}

function work(mode, concurrency, lockMs, stalledMs) {
  if (lib === 'bullmq') {
    const { Worker } = require('bullmq');
    const IORedis = require('ioredis');
    new Worker(queue, processor(mode), {
      connection: new IORedis(url, { maxRetriesPerRequest: null }), concurrency, lockDuration: lockMs,
      stalledInterval: stalledMs, name: `${mode}-worker`,
    });
  } else {
    const Queue = require('bull');
    const q = new Queue(queue, url, { settings: { lockDuration: lockMs, stalledInterval: stalledMs } });
    q.process(concurrency, processor(mode));
  }
  console.log('ready');
}

const add = (q, opts, bytes) => (lib === 'bullmq' ? q.add('job', { pad: 'x'.repeat(bytes) }, opts)
                                                  : q.add({ pad: 'x'.repeat(bytes) }, opts));

(async () => {
  if (role === 'work') return work(args[0], Number(args[1]), Number(args[2]), Number(args[3]));
  const q = open();
  if (role === 'add') {
    const opts = JSON.parse(args[1] || '{}'), bytes = Number(args[2] || 10);
    for (let i = 0; i < Number(args[0]); i++) await add(q, opts, bytes);
  } else if (role === 'produce') {
    const rate = Number(args[0]), bytes = Number(args[1] || 10);
    for (;;) {
      try { await add(q, {}, bytes); } catch (e) { console.error(String(e.message || e)); }
      await new Promise(r => setTimeout(r, 1000 / rate));
    }
  } else if (role === 'fill') {
    let added = 0, errors = 0, run = 0, lastError = '';
    while (run < 20) {
      try { await add(q, {}, Number(args[0])); added++; run = 0; } catch (e) { errors++; run++; lastError = String(e.message || e); }
    }
    console.log(JSON.stringify({ added, errors, lastError }));
  } else if (role === 'counts') {
    console.log(JSON.stringify(await q.getJobCounts()));
  } else if (role === 'pause') {
    await q.pause();
  } else if (role === 'resume') {
    await q.resume();
  }
  await q.close();
  process.exit(0);  // a connection handed to BullMQ is ours to close: end the process instead
})().catch(e => { console.error(e); process.exit(1); });
