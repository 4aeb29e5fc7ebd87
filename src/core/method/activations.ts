/**
 * Activations of the frozen model for prompt sets, read exactly where the method reads them:
 *   - controller inputs: the residual of the LAST prompt token of the chat-templated prompt WITH the generation
 *     prompt (the same token the flow observes before generating; the released code trained without the generation
 *     prompt and ran with it, which this project does not repeat), rows l+1 of the controller's input layers;
 *   - diff-in-means inputs: residuals at every residual index (0..L) and at the last P post-instruction positions.
 * One unsteered forward per prompt (prompts differ in length; batch-1 rows need no padding mask).
 * A small safetensors cache lets train-controller reuse cached activations across runs.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { SteerableModel } from '../model/steerable.js';
import { decodeSafetensors, encodeSafetensors } from '../steering/safetensors.js';
import { writeFileAtomic } from '../steering/direction-file-node.js';
import { compareFingerprints, type ModelFingerprint } from '../eval/resume-check.js';
import { controllerInput } from './flow.js';

export type Progress = (done: number, total: number) => void;

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
export async function controllerActivations(model: SteerableModel, prompts: readonly string[], inputLayers: readonly number[], onProgress?: Progress): Promise<Float32Array> {
  const width = inputLayers.length * model.hiddenSize;
  const x = new Float32Array(prompts.length * width);
  for (let i = 0; i < prompts.length; i++) {
    const r = await lastTokenResidual(model, prompts[i]!);
    x.set(controllerInput(r, inputLayers, model.numLayers, model.hiddenSize), i * width);
    onProgress?.(i + 1, prompts.length);
  }
  return x;
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
): Promise<{ data: Float32Array; logits: Float32Array }> {
  const K = model.numLayers + 1;
  const H = model.hiddenSize;
  const V = model.vocabSize;
  const data = new Float32Array(prompts.length * K * positions * H);
  const logits = new Float32Array(prompts.length * V);
  for (let i = 0; i < prompts.length; i++) {
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

// ------------------------------------------------------------------------------------------------ on-disk cache

/**
 * What cached activations are keyed by: the model's identity (an opaque string, as the model gives it), the token
 * ids each prompt was fed as (so a changed text, tokenizer, chat template or special-token setting misses), the
 * layers read and the hidden size. The model's fingerprint (a few logits of a fixed probe) is stored beside the rows
 * and compared on read, so another model under the same identity misses too.
 */
export interface ActivationCacheKey {
  modelId: string;
  inputLayers: readonly number[];
  hiddenSize: number;
  /** Token ids of each chat-formatted prompt, in row order. */
  promptIds: readonly (readonly number[])[];
  fingerprint: ModelFingerprint;
}

export function activationCacheDigest(key: ActivationCacheKey): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ m: key.modelId, l: key.inputLayers, h: key.hiddenSize, template: 'chat+generation-prompt/last-token' }));
  for (const ids of key.promptIds) h.update(`\u0000${ids.join(',')}`);
  return h.digest('hex');
}

export type ActivationCacheRead = { x: Float32Array; why: null } | { x: null; why: string };

/** Cached rows for exactly this key, or why not (no file, other prompts, another model). A corrupt file is an error. */
export async function readActivationCache(file: string, key: ActivationCacheKey): Promise<ActivationCacheRead> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(file));
  } catch {
    return { x: null, why: 'no cache file yet' };
  }
  const { tensors, metadata } = decodeSafetensors(bytes, { source: file });
  if (metadata.format !== 'steerlab-activations') throw new Error(`${file} is not a Steerlab activation cache (format ${JSON.stringify(metadata.format)})`);
  if (metadata.digest !== activationCacheDigest(key)) return { x: null, why: 'it holds other prompts, layers or another model identity' };
  let stored: unknown = null;
  try {
    stored = JSON.parse(metadata.model_fingerprint ?? 'null');
  } catch {
    stored = null;
  }
  const other = compareFingerprints(stored, key.fingerprint);
  if (other) return { x: null, why: `it was made with another model (${other})` };
  const x = tensors.x;
  const width = key.inputLayers.length * key.hiddenSize;
  if (!x || x.data.length !== key.promptIds.length * width) throw new Error(`${file}: tensor "x" does not hold ${key.promptIds.length} rows of ${width} values`);
  return { x: x.data, why: null };
}

export async function writeActivationCache(file: string, key: ActivationCacheKey, x: Float32Array): Promise<void> {
  const width = key.inputLayers.length * key.hiddenSize;
  const bytes = encodeSafetensors(
    { x: { dtype: 'F32', shape: [key.promptIds.length, width], data: x } },
    {
      format: 'steerlab-activations',
      digest: activationCacheDigest(key),
      model_id: key.modelId,
      model_fingerprint: JSON.stringify(key.fingerprint),
      input_layers: JSON.stringify(key.inputLayers),
    },
  );
  await writeFileAtomic(file, bytes);
}
