#!/usr/bin/env node
/**
 * pullman: the command line for a Pullman manager. See `pullman --help`.
 * Exit codes: 0 ok, 1 job failed (or the request was refused), 2 usage error, 3 connection or auth error.
 */
import { runCli } from './program.js';

// `pullman results JOB | head` closes our stdout early: that is the reader's choice, not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

runCli(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`pullman: ${(err as Error)?.message ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
