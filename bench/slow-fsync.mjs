// Preloaded into the worker by the `local-worker-slow-disk` bench variant (node --import): every
// fsync and fdatasync through a FileHandle takes PULLMAN_BENCH_FSYNC_MS longer, as on an Azure
// VM's standard disk, where one takes milliseconds. This box's fsync takes microseconds, so
// without it the bench cannot see a worker that waits on its disk between tasks (a result held
// behind an fdatasync, say). It changes Node's FileHandle, not Pullman's code.
import { open } from 'node:fs/promises';

const ms = Number(process.env.PULLMAN_BENCH_FSYNC_MS ?? 10);
const handle = await open('/dev/null', 'r');
const proto = Object.getPrototypeOf(handle);
await handle.close();
for (const name of ['sync', 'datasync']) {
  const original = proto[name];
  proto[name] = async function (...args) {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return original.apply(this, args);
  };
}
