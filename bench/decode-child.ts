/**
 * Child: decode and prefill through transformers.js on one model folder, onnxruntime-node (CPU).
 *   unpatched  = plain AutoModelForCausalLM.from_pretrained on the same folder (the original graph)
 *   patched    = loadSteerableModel (patched graph, steering input, residual_stream output), with
 *                zero steering (steering: null) and with a WAS-like non-zero steering matrix
 * Decode tokens/s comes from the streamer's per-token timestamps: the first generated token (which carries the
 * prefill) is excluded, so the figure is pure cached decoding. Every repeat runs the three variants once, in a
 * rotated order (interleaved), and each figure is the median over repeats.
 */
import { AutoModelForCausalLM, Tensor } from '@huggingface/transformers';
import { controllerInputLayers } from '../src/core/controller/index.js';
import { loadSteerableModel } from '../src/core/model/index.js';
import type { TjsModel, TjsTensor } from '../src/core/model/steering-patch.js';
import { childArgs } from './child.js';
import { rotated, summarize } from './stats.js';

interface Args {
  dir: string;
  modelFileName: string;
  newTokens: number;
  promptTokens: number;
  prefillTokens: number;
  reps: number;
}

const { args, done } = childArgs<Args>();

function seededIds(n: number, vocab: number, seed: number): number[] {
  let s = seed >>> 0;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(300 + (s % (vocab - 300))); // past the special and byte tokens
  }
  return out;
}

/** A WAS-like steering matrix: scale s times layer weight w_l times a unit direction, on the controller's layers. */
function wasLikeMatrix(L: number, H: number): Float32Array {
  const m = new Float32Array(L * H);
  const dir = new Float32Array(H);
  let norm = 0;
  for (let h = 0; h < H; h++) {
    dir[h] = Math.sin(h * 1.7 + 0.3);
    norm += dir[h]! * dir[h]!;
  }
  const scale = 2.0;
  for (const l of controllerInputLayers(L)) {
    const w = 0.5 + 0.4 * Math.cos(l);
    for (let h = 0; h < H; h++) m[l * H + h] = (scale * w * dir[h]!) / Math.sqrt(norm);
  }
  return m;
}

/** Streamer that timestamps every generated token (the first put() is the prompt). */
function timingStreamer() {
  const stamps: number[] = [];
  const cpu: number[] = [];
  let sawPrompt = false;
  return {
    stamps,
    streamer: {
      put: () => {
        if (!sawPrompt) sawPrompt = true;
        else {
          stamps.push(performance.now());
          const u = process.cpuUsage();
          cpu.push((u.user + u.system) / 1000);
        }
      },
      end: () => undefined,
    },
    /** CPU milliseconds (all threads of this process) per cached step: robust to other jobs sharing the cores. */
    cpuMsPerToken(): number {
      return (cpu.at(-1)! - cpu[0]!) / (cpu.length - 1);
    },
    /** tokens/s over tokens 2..n (token 1 carries the prefill). */
    rate(): number {
      if (stamps.length < 3) throw new Error(`decode produced only ${stamps.length} tokens; need at least 3 to time cached steps`);
      return (stamps.length - 1) / ((stamps.at(-1)! - stamps[0]!) / 1000);
    },
  };
}

const i64 = (ids: number[]) => new Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]) as unknown as TjsTensor;
const ones = (n: number) => new Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]) as unknown as TjsTensor;

const t0 = performance.now();
const sm = await loadSteerableModel(args.dir, { dtype: 'fp32', device: 'cpu', modelFileName: args.modelFileName, selfCheck: false });
const loadPatchedS = (performance.now() - t0) / 1000;
const loadavgAtStart = (await import('node:os')).loadavg();
const t1 = performance.now();
const plain = (await AutoModelForCausalLM.from_pretrained(args.dir, { dtype: 'fp32', device: 'cpu', model_file_name: args.modelFileName } as never)) as unknown as TjsModel;
const loadPlainS = (performance.now() - t1) / 1000;
console.log(`loaded: patched ${loadPatchedS.toFixed(1)} s, unpatched ${loadPlainS.toFixed(1)} s`);

const L = sm.numLayers;
const H = sm.hiddenSize;
const was = wasLikeMatrix(L, H);
const prompt = seededIds(args.promptTokens, sm.vocabSize, 7);
const prefillIds = seededIds(args.prefillTokens, sm.vocabSize, 8);
const eos = sm.eosTokenIds;

// patched_raw: the patched graph driven by transformers.js's own generate() on the instance-patched model (zero
// steering, no Steerlab generate flow): separates the graph's cost from the cost of Steerlab's generate path.
type Variant = 'unpatched' | 'patched_raw' | 'patched_zero' | 'patched_was';
const VARIANTS: Variant[] = ['unpatched', 'patched_raw', 'patched_zero', 'patched_was'];
const decodeRuns: Record<Variant, number[]> = { unpatched: [], patched_raw: [], patched_zero: [], patched_was: [] };
const decodeCpu: Record<Variant, number[]> = { unpatched: [], patched_raw: [], patched_zero: [], patched_was: [] };
const tokensMade: Record<Variant, number[]> = { unpatched: [], patched_raw: [], patched_zero: [], patched_was: [] };

async function decodeOnce(v: Variant): Promise<void> {
  const t = timingStreamer();
  if (v === 'unpatched' || v === 'patched_raw') {
    await (v === 'unpatched' ? plain : sm.model).generate({
      input_ids: i64(prompt), attention_mask: ones(prompt.length), max_new_tokens: args.newTokens, min_new_tokens: null,
      do_sample: false, num_beams: 1, eos_token_id: eos.length ? eos : null, streamer: t.streamer,
    });
  } else {
    await sm.generate({ inputIds: prompt, maxNewTokens: args.newTokens, steering: v === 'patched_zero' ? null : was, streamer: t.streamer });
  }
  decodeRuns[v].push(t.rate());
  decodeCpu[v].push(t.cpuMsPerToken());
  tokensMade[v].push(t.stamps.length);
}

// Prefill: one forward pass over prefillTokens without cache. Patched = sm.forward (always returns the residual
// stream [1, L+1, S, H]: the patched graph has no switch to turn capture off).
type PVariant = 'unpatched' | 'patched';
const prefillRuns: Record<PVariant, number[]> = { unpatched: [], patched: [] };
const prefillCpu: Record<PVariant, number[]> = { unpatched: [], patched: [] };
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
async function prefillOnce(v: PVariant): Promise<void> {
  const c = cpuMs();
  const t = performance.now();
  if (v === 'unpatched') {
    const out = await plain.forward({ input_ids: i64(prefillIds), attention_mask: ones(prefillIds.length) });
    void out['logits']!.data.length;
  } else {
    const r = await sm.forward([prefillIds], { steering: null });
    void r.residuals.data.length;
  }
  prefillRuns[v].push((performance.now() - t) / 1000);
  prefillCpu[v].push(cpuMs() - c);
}

// Warm-up: one of each (first runs allocate arenas and are not representative).
for (const v of VARIANTS) await decodeOnce(v);
for (const v of ['unpatched', 'patched'] as PVariant[]) await prefillOnce(v);
for (const k of Object.keys(decodeRuns) as Variant[]) (decodeRuns[k].length = 0), (tokensMade[k].length = 0), (decodeCpu[k].length = 0);
for (const k of Object.keys(prefillRuns) as PVariant[]) (prefillRuns[k].length = 0), (prefillCpu[k].length = 0);

for (let r = 0; r < args.reps; r++) {
  for (const v of rotated(VARIANTS, r)) await decodeOnce(v);
  for (const v of rotated(['unpatched', 'patched'] as PVariant[], r)) await prefillOnce(v);
  console.log(`rep ${r + 1}/${args.reps}: tok/s ${VARIANTS.map((v) => decodeRuns[v].at(-1)!.toFixed(2)).join(' / ')}; prefill s ${prefillRuns.unpatched.at(-1)!.toFixed(3)} / ${prefillRuns.patched.at(-1)!.toFixed(3)}`);
}

await sm.dispose();
await plain.dispose();
done({
  load_average: { start: loadavgAtStart, end: (await import('node:os')).loadavg() },
  num_layers: L,
  hidden_size: H,
  vocab_size: sm.vocabSize,
  topology: sm.report.topology,
  load_s: { patched: loadPatchedS, unpatched: loadPlainS },
  decode: Object.fromEntries((Object.keys(decodeRuns) as Variant[]).map((v) => [v, summarize(decodeRuns[v])])),
  decode_ratio_per_rep: {
    raw: decodeRuns.patched_raw.map((x, i) => x / decodeRuns.unpatched[i]!),
    zero: decodeRuns.patched_zero.map((x, i) => x / decodeRuns.unpatched[i]!),
    was: decodeRuns.patched_was.map((x, i) => x / decodeRuns.unpatched[i]!),
  },
  decode_cpu_ms_per_token: Object.fromEntries((Object.keys(decodeCpu) as Variant[]).map((v) => [v, summarize(decodeCpu[v])])),
  decode_cpu_ratio_per_rep: {
    raw: decodeCpu.patched_raw.map((x, i) => x / decodeCpu.unpatched[i]!),
    zero: decodeCpu.patched_zero.map((x, i) => x / decodeCpu.unpatched[i]!),
    was: decodeCpu.patched_was.map((x, i) => x / decodeCpu.unpatched[i]!),
  },
  prefill_cpu_ms: Object.fromEntries((Object.keys(prefillCpu) as PVariant[]).map((v) => [v, summarize(prefillCpu[v])])),
  prefill_cpu_ratio_per_rep: prefillCpu.patched.map((x, i) => x / prefillCpu.unpatched[i]!),
  tokens_generated: Object.fromEntries((Object.keys(tokensMade) as Variant[]).map((v) => [v, Math.min(...tokensMade[v])])),
  prefill: Object.fromEntries((Object.keys(prefillRuns) as PVariant[]).map((v) => [v, summarize(prefillRuns[v])])),
  prefill_ratio_per_rep: prefillRuns.patched.map((x, i) => x / prefillRuns.unpatched[i]!),
  residual_bytes_per_prefill: (L + 1) * args.prefillTokens * H * 4,
});
