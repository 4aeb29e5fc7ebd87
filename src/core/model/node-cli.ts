/**
 * Node-only helpers shared by the CLI commands that load a steerable model: hub override, dtype / device flags,
 * progress on stderr, steering matrix files.
 */
import { readFile } from 'node:fs/promises';
import { env } from '@huggingface/transformers';
import { decodeUtf8 } from '../util/utf8.js';
import type { Device, Dtype, LoadOptions, LoadProgress } from './types.js';

/**
 * Devices a command can use in Node: the CPU (onnxruntime-node). 'wasm' is onnxruntime-web's, for browsers, and
 * onnxruntime-node's WebGPU is experimental and needs a GPU this machine may not have: both are the lab's.
 */
export const DEVICE_CHOICES: Device[] = ['cpu'];
export const DTYPE_CHOICES: Dtype[] = ['fp32', 'fp16', 'q8', 'q4', 'q4f16'];

/** Points transformers.js (and Steerlab's own fetches) at another hub: --hub beats STEERLAB_HUB. */
export function applyHub(flag: string | undefined): void {
  const url = flag ?? process.env['STEERLAB_HUB'];
  if (!url) return;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`--hub / STEERLAB_HUB must be an http(s) URL, got "${url}"`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`--hub / STEERLAB_HUB must be an http(s) URL, got "${url}"`);
  env.remoteHost = url.endsWith('/') ? url : `${url}/`;
}

export function parseDtype(v: string | undefined): Dtype | undefined {
  if (v === undefined) return undefined;
  if (!(DTYPE_CHOICES as string[]).includes(v)) throw new Error(`--dtype must be one of ${DTYPE_CHOICES.join(', ')}, got "${v}"`);
  return v as Dtype;
}

export function parseDevice(v: string | undefined): Device | undefined {
  if (v === undefined) return undefined;
  if (!(DEVICE_CHOICES as string[]).includes(v)) {
    throw new Error(`--device must be ${DEVICE_CHOICES.join(' or ')} here: the command line runs models on the CPU (onnxruntime-node); wasm and webgpu are for the browser lab; got "${v}"`);
  }
  return v as Device;
}

function kb(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(0)} KB`;
}

/** Progress lines on stderr: one per file at start, every 10 %, and at the end; stages as they happen. */
export function stderrProgress(quiet = false): NonNullable<LoadOptions['progress']> {
  const lastDecile = new Map<string, number>();
  return (p: LoadProgress) => {
    if (quiet) return;
    if (p.stage === 'download') {
      const pct = p.total ? Math.floor((100 * p.loaded) / p.total) : null;
      const decile = p.done ? 10 : pct === null ? 0 : Math.floor(pct / 10);
      if (lastDecile.get(p.file) === decile) return;
      lastDecile.set(p.file, decile);
      const size = p.total ? `${kb(p.loaded)} / ${kb(p.total)}` : kb(p.loaded);
      process.stderr.write(`${p.fromCache ? 'cache' : 'download'} ${p.file} ${p.done ? 'done' : `${pct ?? '?'}%`} (${size})\n`);
    } else if (p.stage === 'patch') process.stderr.write(`patch ${p.file}\n`);
    else if (p.stage === 'session') process.stderr.write(`session ${p.file}\n`);
    else process.stderr.write(`${p.stage}\n`);
  };
}

/** A steering file: JSON [num_layers][hidden] numbers -> Float32Array [L*H], checked against the model. */
export async function readSteeringFile(file: string, numLayers: number, hiddenSize: number): Promise<Float32Array> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(decodeUtf8(await readFile(file), file));
  } catch (e) {
    throw new Error(`--steering ${file}: cannot read it as JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(parsed) || parsed.length !== numLayers) {
    throw new Error(`--steering ${file}: expected a JSON array of ${numLayers} rows (one per layer), got ${Array.isArray(parsed) ? `${parsed.length} rows` : typeof parsed}`);
  }
  const out = new Float32Array(numLayers * hiddenSize);
  parsed.forEach((row: unknown, l: number) => {
    if (!Array.isArray(row) || row.length !== hiddenSize) {
      throw new Error(`--steering ${file}: row ${l} must hold ${hiddenSize} numbers (hidden size), got ${Array.isArray(row) ? row.length : typeof row}`);
    }
    row.forEach((v: unknown, i: number) => {
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`--steering ${file}: row ${l}, column ${i} is ${JSON.stringify(v)}; expected a finite number`);
      out[l * hiddenSize + i] = v;
    });
  });
  return out;
}
