/**
 * The two workers the lab talks to, behind workers/protocol.ts through Comlink. Created lazily, once per page.
 * Callbacks cross the boundary wrapped in Comlink.proxy.
 */
import * as Comlink from 'comlink';
import type { ControllerWorkerApi, LlmWorkerApi } from '../../../workers/protocol.js';

let llm: Comlink.Remote<LlmWorkerApi> | null = null;
let controller: Comlink.Remote<ControllerWorkerApi> | null = null;
const workerErrors: ((message: string) => void)[] = [];

/** Called when a worker fails outside a call (e.g. its script did not load). */
export function onWorkerError(fn: (message: string) => void): void {
  workerErrors.push(fn);
}

function watch(w: Worker, name: string): Worker {
  w.addEventListener('error', (e) => workerErrors.forEach((f) => f(`${name} worker: ${e.message || 'failed to start'}`)));
  return w;
}

// `new Worker(new URL(...), { type: 'module' })` must stay written out in full: Vite bundles a worker only when it
// sees that exact pattern (a URL built elsewhere is shipped as a plain asset and never runs in the built app).
export function llmWorker(): Comlink.Remote<LlmWorkerApi> {
  llm ??= Comlink.wrap<LlmWorkerApi>(watch(new Worker(new URL('../../../workers/llm.worker.ts', import.meta.url), { type: 'module', name: 'llm' }), 'llm'));
  return llm;
}

export function controllerWorker(): Comlink.Remote<ControllerWorkerApi> {
  controller ??= Comlink.wrap<ControllerWorkerApi>(
    watch(new Worker(new URL('../../../workers/controller.worker.ts', import.meta.url), { type: 'module', name: 'controller' }), 'controller'),
  );
  return controller;
}

export const proxy = Comlink.proxy;
