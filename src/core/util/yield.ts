/**
 * One macrotask turn, so timers, a worker's incoming messages (e.g. cancel) and abort signals can run between steps
 * of long loops. setImmediate (Node) and a MessageChannel round trip (browsers, workers) are not clamped to 4 ms the
 * way nested setTimeout(0) is in browsers.
 */
export function yieldToEventLoop(): Promise<void> {
  const g = globalThis as { setImmediate?: (cb: () => void) => unknown };
  if (typeof g.setImmediate === 'function') return new Promise((resolve) => g.setImmediate!(resolve));
  if (typeof MessageChannel !== 'undefined') {
    return new Promise((resolve) => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => {
        ch.port1.close();
        resolve();
      };
      ch.port2.postMessage(null);
    });
  }
  return new Promise((resolve) => setTimeout(resolve, 0));
}
