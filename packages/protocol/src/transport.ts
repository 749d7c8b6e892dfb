/**
 * Sends a turn's frames on a `ws` WebSocket as one write. ws has no cork of its own, but keeps
 * its TCP socket as `_socket` and writes each frame straight to it; corked, the frames leave
 * together. (Absent on some test transports: then they are plain sends.)
 *
 * Why: frames written apart are a syscall each. The manager sends a worker's acks and its next
 * tasks together, the worker its results and its freed slots; written apart, they were a sixth
 * of the manager's CPU at 64 x 1 (docs/benchmarks.md).
 */
export function sendFrames(socket: { send(data: string): void }, frames: readonly string[]): void {
  const tcp = (socket as { _socket?: { cork?: () => void; uncork?: () => void } })._socket;
  tcp?.cork?.();
  for (const f of frames) socket.send(f);
  tcp?.uncork?.();
}
