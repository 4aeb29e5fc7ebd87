/// <reference types="vite/client" />
/**
 * Controller worker: trains the WAS controller (src/core/controller, TensorFlow.js) off the UI thread and serves
 * workers/protocol.ts's ControllerWorkerApi through Comlink. The trained controller's bytes go back to the UI, which
 * hands them to the LLM worker: inference runs there, where the flow runs (src/core/controller/forward.ts).
 *
 * Backend: WASM (XNNPACK), else CPU. WebGPU/WebGL are skipped on purpose: a controller step is a batch of 4 rows
 * through a 2-layer MLP, so GPU launch and read-back latency would dominate, and the LLM worker already uses the GPU.
 * The tfjs .wasm files are bundled by Vite (`?url` imports) so nothing is fetched from a CDN; threads are off
 * (see below).
 */
import * as Comlink from 'comlink';
import * as tf from '@tensorflow/tfjs-core';
// Registers the WASM backend and its flags now, so the flag below can be set before the backend initialises.
import '@tensorflow/tfjs-backend-wasm';
import wasmPlain from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm?url';
import wasmSimd from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm?url';
import wasmThreaded from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm?url';
import { encodeController, lastBackendReport, selectBackend, trainController } from '../src/core/controller/index.js';
import type { ControllerBackendInfo, ControllerInfo, ControllerTrainEvent, ControllerTrainJob, ControllerWorkerApi } from './protocol.js';

// The threaded WASM build starts helper workers from a Blob of its own (minified) source, which breaks once Vite has
// bundled it ("e is not defined" in the built app). A 4-row batch through a 2-layer MLP gains nothing from threads:
// use the single-threaded SIMD build.
tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);

let backend: Promise<ControllerBackendInfo> | null = null;
let training: AbortController | null = null;

function ensureBackend(): Promise<ControllerBackendInfo> {
  backend ??= selectBackend(['wasm', 'cpu'], {
    wasmPaths: {
      'tfjs-backend-wasm.wasm': wasmPlain,
      'tfjs-backend-wasm-simd.wasm': wasmSimd,
      'tfjs-backend-wasm-threaded-simd.wasm': wasmThreaded,
    },
  }).then((name) => ({
    backend: name,
    attempts: (lastBackendReport()?.attempts ?? []).map((a) => ({ name: a.name, ok: a.ok, reason: a.reason ?? null })),
  }));
  return backend;
}

function checkRows(x: Float32Array, rows: number, what: string): number {
  if (!(x instanceof Float32Array)) throw new TypeError(`${what}: features must be a Float32Array [rows * inputSize]`);
  if (!Number.isInteger(rows) || rows <= 0 || x.length % rows !== 0) {
    throw new RangeError(`${what}: ${x.length} feature values do not split into ${rows} rows`);
  }
  return x.length / rows;
}

const api: ControllerWorkerApi = {
  init: () => ensureBackend(),

  async train(job: ControllerTrainJob, onEvent?: (e: ControllerTrainEvent) => void): Promise<ControllerInfo> {
    if (training) throw new Error('train: a training run is already in progress; cancel() it first');
    if (!job || !(job.features instanceof Float32Array) || !(job.labels instanceof Uint8Array)) {
      throw new TypeError('train: expected { features: Float32Array [rows * inputSize], labels: Uint8Array [rows], options }');
    }
    checkRows(job.features, job.labels.length, 'train');
    await ensureBackend();
    const abort = new AbortController();
    training = abort;
    try {
      const c = await trainController(
        { x: job.features, labels: job.labels },
        {
          ...job.options,
          validation: job.validation ? { x: job.validation.features, labels: job.validation.labels } : undefined,
          signal: abort.signal,
          onBatch: onEvent ? (p) => onEvent({ type: 'batch', epoch: p.epoch, batch: p.batch, batches: p.batches, loss: p.loss }) : undefined,
          onEpoch: onEvent ? (m) => onEvent({ type: 'epoch', metrics: { ...m } }) : undefined,
        },
      );
      const out: ControllerInfo = { metadata: JSON.parse(JSON.stringify(c.metadata)) as ControllerInfo['metadata'], bytes: encodeController(c) };
      return Comlink.transfer(out, [out.bytes.buffer as ArrayBuffer]);
    } finally {
      training = null;
    }
  },

  async cancel(): Promise<void> {
    training?.abort(new DOMException('training cancelled', 'AbortError'));
  },
};

Comlink.expose(api);
