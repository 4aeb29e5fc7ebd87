/**
 * Checkpoints: the DecoderWeights of a training run as one little-endian float32 blob plus a JSON header naming the
 * shape, so that export and evaluation read exactly what training wrote. Written atomically.
 */
import { readFile } from 'node:fs/promises';
import type { DecoderShape } from '../core/onnx/testmodel/config.js';
import { writeFileAtomic } from '../core/onnx/testmodel/files.js';
import type { DecoderWeights, LayerWeights } from '../core/onnx/testmodel/weights.js';

const LAYER_ORDER = ['inputNorm', 'q', 'k', 'v', 'o', 'postAttentionNorm', 'gate', 'up', 'down'] as const;

function tensorsInOrder(w: DecoderWeights): Float32Array[] {
  return [w.embedTokens, ...w.layers.flatMap((l) => LAYER_ORDER.map((k) => l[k] as Float32Array)), w.finalNorm, w.lmHead];
}

function sizesInOrder(s: DecoderShape): number[] {
  const { hiddenSize: H, numHeads: nH, numKvHeads: nKv, headDim: hd, intermediateSize: I, vocabSize: V } = s;
  const layer = [H, H * nH * hd, H * nKv * hd, H * nKv * hd, nH * hd * H, H, H * I, H * I, I * H];
  return [V * H, ...Array.from({ length: s.numLayers }, () => layer).flat(), H, H * V];
}

export async function saveCheckpoint(path: string, shape: DecoderShape, w: DecoderWeights, meta: Record<string, unknown>): Promise<void> {
  const parts = tensorsInOrder(w);
  const sizes = sizesInOrder(shape);
  parts.forEach((p, i) => {
    if (p.length !== sizes[i]) throw new Error(`saveCheckpoint: tensor ${i} has ${p.length} values, shape expects ${sizes[i]}`);
  });
  const total = sizes.reduce((a, b) => a + b, 0);
  const blob = new Float32Array(total);
  let off = 0;
  for (const p of parts) {
    blob.set(p, off);
    off += p.length;
  }
  await writeFileAtomic(`${path}.bin`, new Uint8Array(blob.buffer));
  await writeFileAtomic(`${path}.json`, `${JSON.stringify({ shape, floats: total, ...meta }, null, 2)}\n`);
}

export async function loadCheckpoint(path: string): Promise<{ shape: DecoderShape; weights: DecoderWeights; meta: Record<string, unknown> }> {
  const meta = JSON.parse(await readFile(`${path}.json`, 'utf8')) as Record<string, unknown> & { shape: DecoderShape; floats: number };
  const buf = await readFile(`${path}.bin`);
  const shape = meta.shape;
  const sizes = sizesInOrder(shape);
  const total = sizes.reduce((a, b) => a + b, 0);
  if (buf.byteLength !== total * 4) {
    throw new Error(`loadCheckpoint: ${path}.bin holds ${buf.byteLength} bytes, the shape in ${path}.json needs ${total * 4}`);
  }
  const all = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  let off = 0;
  const next = (i: number) => {
    const t = all.slice(off, off + sizes[i]);
    off += sizes[i];
    return t;
  };
  let i = 0;
  const embedTokens = next(i++);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < shape.numLayers; l++) {
    const lw = {} as LayerWeights;
    for (const k of LAYER_ORDER) lw[k] = next(i++);
    layers.push(lw);
  }
  const finalNorm = next(i++);
  const lmHead = next(i++);
  return { shape, weights: { embedTokens, layers, finalNorm, lmHead }, meta };
}
