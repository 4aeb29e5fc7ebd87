/** Shared helpers for the test-model tests: ORT feeds for a decoder graph and max-abs-diff. */
import * as ort from 'onnxruntime-node';
import type { DecoderShape } from '../../src/core/onnx/testmodel/config.js';

export const TOL = 1e-4;

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

const i64 = (rows: number[][]) =>
  new ort.Tensor('int64', BigInt64Array.from(rows.flat().map((x) => BigInt(x))), [rows.length, rows[0].length]);

export type Past = Record<string, ort.Tensor>;

/** Empty past (past_sequence_length 0), as transformers.js builds it on the first step. */
export function emptyPast(shape: DecoderShape, batch: number): Past {
  const past: Past = {};
  for (let l = 0; l < shape.numLayers; l++) {
    for (const kv of ['key', 'value']) {
      past[`past_key_values.${l}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [batch, shape.numKvHeads, 0, shape.headDim]);
    }
  }
  return past;
}

/** present.* of one run, renamed as the next run's past_key_values.* */
export function presentAsPast(shape: DecoderShape, out: ort.InferenceSession.ReturnType): Past {
  const past: Past = {};
  for (let l = 0; l < shape.numLayers; l++) {
    for (const kv of ['key', 'value']) past[`past_key_values.${l}.${kv}`] = out[`present.${l}.${kv}`];
  }
  return past;
}

export interface StepInputs {
  ids: number[][];
  mask: number[][];
  positions: number[][];
  past: Past;
  useCacheBranch?: boolean;
}

export async function runDecoder(sess: ort.InferenceSession, s: StepInputs): Promise<ort.InferenceSession.ReturnType> {
  const feeds: Record<string, ort.Tensor> = {
    input_ids: i64(s.ids),
    attention_mask: i64(s.mask),
    position_ids: i64(s.positions),
    ...s.past,
  };
  if (s.useCacheBranch !== undefined) feeds.use_cache_branch = new ort.Tensor('bool', [s.useCacheBranch], [1]);
  return sess.run(feeds);
}

/** Rows [row][pos] of a [B, S, V] logits tensor as Float32Array views. */
export function logitsRow(t: ort.Tensor, b: number, s: number): Float32Array {
  const [, S, V] = t.dims as number[];
  return (t.data as Float32Array).subarray((b * S + s) * V, (b * S + s + 1) * V);
}

export const range = (n: number) => Array.from({ length: n }, (_, i) => i);
