/// <reference types="vite/client" />
/**
 * LLM worker: hosts one steerable model and serves workers/protocol.ts's LlmWorkerApi through Comlink.
 * transformers.js is pointed at our own copy of onnxruntime-web's run-time files before anything loads
 * (workers/ort-assets.ts), so the worker never contacts a CDN.
 */
import * as Comlink from 'comlink';
import { env } from '@huggingface/transformers';
import { appRootUrl, ortWasmPaths } from './ort-assets.js';
import { createLlmHost } from './llm-host.js';
import { wasmThreads } from './device.js';

const onnx = env.backends.onnx as { wasm?: { wasmPaths?: unknown; numThreads?: number }; versions?: { web?: string } } | undefined;
if (!onnx?.wasm) throw new Error('llm.worker: transformers.js exposes no env.backends.onnx.wasm; cannot point it at local WASM files');
onnx.wasm.wasmPaths = ortWasmPaths(appRootUrl(import.meta.env.BASE_URL, self.location.href), onnx.versions?.web);
// Every core up to 4, not onnxruntime-web's half (one thread on 2 cores): device.ts wasmThreads.
onnx.wasm.numThreads = wasmThreads(self.crossOriginIsolated, self.navigator.hardwareConcurrency);

Comlink.expose(createLlmHost());
