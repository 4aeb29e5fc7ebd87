/**
 * Child: the playground's compare (base and steered from ONE batch-2 generation, SteerableModel.compare) against one
 * plain generation of the same length (batch 1, unsteered, SteerableModel.generate), and against what the lab did
 * before: a base generation followed by a steered one (two batch-1 generations). Same prompt ids, greedy, the same
 * WAS-like matrix for the steered rows; the compare observes the last prompt token first, as the flow does.
 * Every repeat runs the variants once in a rotated order; figures are medians over repeats. A variant whose
 * generation ended early (EOS) is reported with its token count: the ratio is taken per generated token then.
 */
import { controllerInputLayers } from '../src/core/controller/index.js';
import { loadSteerableModel } from '../src/core/model/index.js';
import { childArgs } from './child.js';
import { rotated, summarize } from './stats.js';

interface Args {
  dir: string;
  modelFileName?: string;
  newTokens: number;
  prompt: string;
  reps: number;
}

const { args, done } = childArgs<Args>();
const sm = await loadSteerableModel(args.dir, { dtype: 'fp32', device: 'cpu', selfCheck: false, ...(args.modelFileName ? { modelFileName: args.modelFileName } : {}) });
const L = sm.numLayers;
const H = sm.hiddenSize;
const ids = sm.formatChat(args.prompt).ids;

/** A WAS-like matrix: s * w_l * alpha * d on the controller's input layers (timing only). */
const matrix = new Float32Array(L * H);
const dir = Float32Array.from({ length: H }, (_, h) => Math.sin(h * 1.7 + 0.3));
const norm = Math.hypot(...dir);
for (const l of controllerInputLayers(L)) for (let h = 0; h < H; h++) matrix[l * H + h] = (2 * (0.5 + 0.4 * Math.cos(l)) * dir[h]!) / norm;
const policy = () => matrix;

type V = 'plain' | 'compare' | 'sequential';
const seconds: Record<V, number[]> = { plain: [], compare: [], sequential: [] };
const tokens: Record<V, number[]> = { plain: [], compare: [], sequential: [] };

async function once(v: V): Promise<void> {
  const t0 = performance.now();
  let n: number;
  if (v === 'plain') {
    n = (await sm.generate({ inputIds: ids, maxNewTokens: args.newTokens, steering: null })).tokenIds.length;
  } else if (v === 'compare') {
    const r = await sm.compare({ inputIds: ids, maxNewTokens: args.newTokens, steering: policy });
    n = Math.max(r.base.tokenIds.length, r.steered.tokenIds.length);
  } else {
    const a = await sm.generate({ inputIds: ids, maxNewTokens: args.newTokens, steering: null });
    const b = await sm.generate({ inputIds: ids, maxNewTokens: args.newTokens, steering: policy });
    n = Math.max(a.tokenIds.length, b.tokenIds.length);
  }
  seconds[v].push((performance.now() - t0) / 1000);
  tokens[v].push(n);
}

const variants: V[] = ['plain', 'compare', 'sequential'];
for (const v of variants) await once(v); // warm-up (first runs allocate), not counted
for (const v of variants) {
  seconds[v].length = 0;
  tokens[v].length = 0;
}
for (let r = 0; r < args.reps; r++) for (const v of rotated(variants, r)) await once(v);
// Paired per repeat, per generated token (equal lengths unless a row met EOS early).
const perToken = (v: V, r: number) => seconds[v][r]! / tokens[v][r]!;
const ratio = (a: V, b: V) => summarize(seconds[a].map((_, r) => perToken(a, r) / perToken(b, r)));
await sm.dispose();
done({
  num_layers: L,
  hidden_size: H,
  topology: sm.report.topology,
  prompt_tokens: ids.length,
  new_tokens: args.newTokens,
  tokens_generated: Object.fromEntries(variants.map((v) => [v, Math.min(...tokens[v])])),
  seconds: Object.fromEntries(variants.map((v) => [v, summarize(seconds[v])])),
  compare_over_plain: ratio('compare', 'plain'),
  sequential_over_plain: ratio('sequential', 'plain'),
});
