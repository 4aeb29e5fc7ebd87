/**
 * Activations of the frozen model for prompt sets, read exactly where the method reads them:
 *   - controller inputs: the residual of the LAST prompt token of the chat-templated prompt WITH the generation
 *     prompt (the same token the flow observes before generating; the released code trained without the generation
 *     prompt and ran with it, which this project does not repeat), rows l+1 of the controller's input layers;
 *   - diff-in-means inputs: residuals at every residual index (0..L) and at the last P post-instruction positions.
 * One unsteered forward per prompt (prompts differ in length; batch-1 rows need no padding mask).
 * Browser-safe: the lab's LLM worker runs these. A small safetensors cache (encodeActivationCache /
 * decodeActivationCache here, files in activations-node.ts) lets train-controller reuse activations across runs; it is
 * keyed by the model's identity AND variant (activations of a quantised graph differ), the input layers and the prompts;
 * the model's fingerprint (logits of a fixed probe, src/core/eval/resume-check.ts) is stored beside the rows and
 * compared on read, so other weights under the same identity miss too.
 */
import type { DecoderLayer } from '../model/layer-index.js';
import type { ModelIdentity } from '../model/model-id.js';
import type { SteerableModel } from '../model/steerable.js';
import { decodeSafetensors, encodeSafetensors } from '../steering/safetensors.js';
import { sha256Hex } from '../util/sha256.js';
import { compareFingerprints, type ModelFingerprint } from '../eval/resume-check.js';
import { controllerInput } from './flow.js';

export type Progress = (done: number, total: number) => void;

/** Stops a loop over prompts between two forward passes when the signal fires (the lab's cancel). */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new DOMException('cancelled', 'AbortError');
}

/** Unsteered residual [L+1, H] of the last chat-templated prompt token. */
export async function lastTokenResidual(model: SteerableModel, prompt: string): Promise<Float32Array> {
  const { ids } = model.formatChat(prompt);
  const { residuals } = await model.forward([ids], { steering: null });
  return residualColumn(residuals.data, model.numLayers + 1, ids.length, model.hiddenSize, ids.length - 1);
}

/** residuals [1, K, S, H] -> [K, H] at position p. */
function residualColumn(data: Float32Array, K: number, S: number, H: number, p: number): Float32Array {
  const out = new Float32Array(K * H);
  for (let k = 0; k < K; k++) out.set(data.subarray((k * S + p) * H, (k * S + p + 1) * H), k * H);
  return out;
}

/** Controller input rows [n, inputLayers * H] for a prompt list. */
export async function controllerActivations(
  model: SteerableModel,
  prompts: readonly string[],
  inputLayers: readonly DecoderLayer[],
  onProgress?: Progress,
  signal?: AbortSignal,
): Promise<Float32Array> {
  const width = inputLayers.length * model.hiddenSize;
  const x = new Float32Array(prompts.length * width);
  for (let i = 0; i < prompts.length; i++) {
    throwIfAborted(signal);
    const r = await lastTokenResidual(model, prompts[i]!);
    x.set(controllerInput(r, inputLayers, model.numLayers, model.hiddenSize), i * width);
    onProgress?.(i + 1, prompts.length);
  }
  return x;
}

/** Unsteered residuals [n, L+1, H] of the last chat-templated prompt token of each prompt. */
export async function lastTokenActivations(model: SteerableModel, prompts: readonly string[], onProgress?: Progress, signal?: AbortSignal): Promise<Float32Array> {
  const stride = (model.numLayers + 1) * model.hiddenSize;
  const out = new Float32Array(prompts.length * stride);
  for (let i = 0; i < prompts.length; i++) {
    throwIfAborted(signal);
    out.set(await lastTokenResidual(model, prompts[i]!), i * stride);
    onProgress?.(i + 1, prompts.length);
  }
  return out;
}

/** Number of post-instruction template tokens every prompt has (the minimum over prompts, at least 1). */
export function commonPostInstructionCount(model: SteerableModel, prompts: readonly string[]): number {
  let p = Infinity;
  for (const q of prompts) p = Math.min(p, model.formatChat(q).postInstruction.length);
  if (!Number.isFinite(p) || p < 1) throw new Error('no post-instruction positions: the chat template adds no tokens after the user text');
  return p;
}

/**
 * Residuals [n, L+1, P, H] at the last P positions of each chat-templated prompt (Arditi's negative positions:
 * position p is offset p - P from the end), plus the last-position logits [n, V] (unsteered).
 */
export async function postInstructionResiduals(
  model: SteerableModel,
  prompts: readonly string[],
  positions: number,
  onProgress?: Progress,
  signal?: AbortSignal,
): Promise<{ data: Float32Array; logits: Float32Array }> {
  const K = model.numLayers + 1;
  const H = model.hiddenSize;
  const V = model.vocabSize;
  const data = new Float32Array(prompts.length * K * positions * H);
  const logits = new Float32Array(prompts.length * V);
  for (let i = 0; i < prompts.length; i++) {
    throwIfAborted(signal);
    const { ids } = model.formatChat(prompts[i]!);
    if (ids.length < positions) throw new Error(`prompt ${i} has ${ids.length} tokens, fewer than ${positions} post-instruction positions`);
    const out = await model.forward([ids], { steering: null });
    const S = ids.length;
    for (let k = 0; k < K; k++) {
      for (let p = 0; p < positions; p++) {
        const s = S - positions + p;
        data.set(out.residuals.data.subarray((k * S + s) * H, (k * S + s + 1) * H), ((i * K + k) * positions + p) * H);
      }
    }
    logits.set(out.logits.data.subarray((S - 1) * V, S * V), i * V);
    onProgress?.(i + 1, prompts.length);
  }
  return { data, logits };
}

// ------------------------------------------------------------------------------------------------ cache

export interface ActivationCacheKey {
  /** The model the activations were read from: its id and the variant (graph) that computed them. */
  model: ModelIdentity;
  inputLayers: readonly number[];
  hiddenSize: number;
  /** The prompts, in row order (their texts are hashed: a changed set misses the cache). */
  prompts: readonly string[];
  /** What the model computes on a fixed probe (modelFingerprint); compared with the stored one when both exist. */
  fingerprint?: ModelFingerprint;
}

export async function activationCacheDigest(key: ActivationCacheKey): Promise<string> {
  const enc = new TextEncoder();
  const head = JSON.stringify({ m: key.model.id, v: key.model.variant, l: key.inputLayers, h: key.hiddenSize, template: 'chat+generation-prompt/last-token' });
  return sha256Hex(enc.encode(head), ...key.prompts.map((p) => enc.encode(`\u0000${p}`)));
}

/** Cached rows for exactly this key, or null (another key). Bytes that are not an activation cache are an error. */
export async function decodeActivationCache(bytes: Uint8Array, key: ActivationCacheKey, source: string): Promise<Float32Array | null> {
  const { tensors, metadata } = decodeSafetensors(bytes, { source });
  if (metadata.format !== 'steerlab-activations') throw new Error(`${source} is not a Steerlab activation cache (format ${JSON.stringify(metadata.format)})`);
  if (metadata.digest !== (await activationCacheDigest(key))) return null;
  if (key.fingerprint && metadata.model_fingerprint !== undefined) {
    let stored: unknown = null;
    try {
      stored = JSON.parse(metadata.model_fingerprint);
    } catch {
      stored = null;
    }
    if (compareFingerprints(stored, key.fingerprint) !== null) return null;
  }
  const x = tensors.x;
  const width = key.inputLayers.length * key.hiddenSize;
  if (!x || x.data.length !== key.prompts.length * width) throw new Error(`${source}: tensor "x" does not hold ${key.prompts.length} rows of ${width} values`);
  return x.data;
}

export async function encodeActivationCache(key: ActivationCacheKey, x: Float32Array): Promise<Uint8Array> {
  const width = key.inputLayers.length * key.hiddenSize;
  return encodeSafetensors(
    { x: { dtype: 'F32', shape: [key.prompts.length, width], data: x } },
    {
      format: 'steerlab-activations',
      digest: await activationCacheDigest(key),
      model_id: key.model.id,
      model_name: key.model.name,
      model_variant: JSON.stringify(key.model.variant),
      input_layers: JSON.stringify(key.inputLayers),
      ...(key.fingerprint ? { model_fingerprint: JSON.stringify(key.fingerprint) } : {}),
    },
  );
}
