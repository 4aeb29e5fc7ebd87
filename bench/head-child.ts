/**
 * Child: what the language-model head costs a prefill whose logits nobody reads (the `capture` section's
 * `prefill_head` rows). One session, the loader's patched graph (loadSteerableModel: steering, projection and
 * logits_from inputs); one prefill pass of S tokens on an empty cache, fetching the cache only, as the decode engine
 * prefills: `all` feeds logits_from 0 (the head on every position, as before), `last` feeds S - 1 (what the engine
 * feeds). Repeats interleaved, ratio paired per repeat.
 */
import { loadSteerableModel } from '../src/core/model/index.js';
import type { OrtFeeds, OrtSessionLike } from '../src/core/model/decode.js';
import { childArgs } from './child.js';
import { rotated, summarize } from './stats.js';

interface Args {
  dir: string;
  tokens: number[];
  reps: number;
}

const { args, done } = childArgs<Args>();
const sm = await loadSteerableModel(args.dir, { dtype: 'fp32' });
const g = sm.decodeEngine().g;
const session: OrtSessionLike = g.session;
if (!session.inputNames.includes('logits_from')) throw new Error(`the loaded graph has no logits_from input (inputs: ${session.inputNames.join(', ')})`);
const kv = session.inputNames.filter((n) => n.startsWith('past_key_values'));
const meta = session.inputMetadata?.find((m) => m.name === kv[0]);
const [kvHeads, headDim] = [Number(meta?.shape?.[1]), Number(meta?.shape?.[3])];
const presents = session.outputNames.filter((n) => n.startsWith('present'));
const LH = sm.numLayers * sm.hiddenSize;

function feeds(S: number, from: number): OrtFeeds {
  const f: OrtFeeds = {
    input_ids: g.tensor('int64', BigInt64Array.from({ length: S }, (_, i) => BigInt(3 + ((i * 7919) % (sm.vocabSize - 10)))), [1, S]),
    attention_mask: g.tensor('int64', new BigInt64Array(S).fill(1n), [1, S]),
    steering: g.tensor('float32', new Float32Array(LH), [1, sm.numLayers, sm.hiddenSize]),
    projection: g.tensor('float32', new Float32Array(LH), [1, sm.numLayers, sm.hiddenSize]),
    logits_from: g.tensor('int64', BigInt64Array.of(BigInt(from)), [1]),
  };
  if (session.inputNames.includes('position_ids')) f['position_ids'] = g.tensor('int64', BigInt64Array.from({ length: S }, (_, i) => BigInt(i)), [1, S]);
  for (const n of kv) f[n] = g.tensor('float32', new Float32Array(0), [1, kvHeads, 0, headDim]);
  return f;
}

const rows = [];
for (const S of args.tokens) {
  const ms: Record<'all' | 'last', number[]> = { all: [], last: [] };
  await session.run(feeds(S, 0), presents); // warm-up
  for (let r = 0; r < args.reps; r++) {
    for (const v of rotated(['all', 'last'] as const, r)) {
      const f = feeds(S, v === 'all' ? 0 : S - 1);
      const t = performance.now();
      await session.run(f, presents);
      ms[v].push(performance.now() - t);
    }
  }
  rows.push({ prompt_tokens: S, all_ms: summarize(ms.all), last_ms: summarize(ms.last), ratio_last_to_all: summarize(ms.last.map((x, i) => x / ms.all[i]!)) });
}
await sm.dispose();
done({ repeats: args.reps, rows });
