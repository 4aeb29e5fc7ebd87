/**
 * What the eval_batch measurements run, in Node (eval-batch-child.ts) and in the browser page (browser/eval-batch.ts):
 * WAS-style steering computed from the observed last prompt token, and every prompt decoded in chunks of B.
 */
import type { SteerableModel } from '../src/core/model/index.js';

/** A fixed direction on the last third of the layers, scaled by a number read from the observation (like s). */
export function observedWasSteering(numLayers: number, hiddenSize: number): { observe(res: Float32Array): Float32Array } {
  const L = numLayers;
  const H = hiddenSize;
  const dir = new Float32Array(H).map((_, h) => Math.sin(h * 1.7 + 0.3) / Math.sqrt(H / 2));
  return {
    observe: (res) => {
      const s = Math.tanh(res[L * H]!);
      const m = new Float32Array(L * H);
      for (let l = Math.ceil((2 * L) / 3); l < L; l++) m.set(dir.map((x) => 4 * s * x), l * H);
      return m;
    },
  };
}

/** Decodes every prompt, B rows per engine call in file order; wall seconds and tokens generated. */
export async function decodeInChunks(sm: SteerableModel, prompts: number[][], B: number, maxNewTokens: number): Promise<{ seconds: number; tokens: number }> {
  const steering = observedWasSteering(sm.numLayers, sm.hiddenSize);
  const t = performance.now();
  let tokens = 0;
  for (let i = 0; i < prompts.length; i += B) {
    const rows = prompts.slice(i, i + B).map((ids) => ({ ids, maxNewTokens, steering }));
    for (const r of await sm.decode(rows)) tokens += r.tokenIds.length;
  }
  return { seconds: (performance.now() - t) / 1000, tokens };
}

/** The first n prompts of the harmless-test split (JSONL text). */
export function harmlessPrompts(jsonl: string, n: number): string[] {
  return jsonl.split('\n').filter(Boolean).slice(0, n).map((l) => (JSON.parse(l) as { instruction: string }).instruction);
}
