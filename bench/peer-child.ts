/**
 * Child: llama.cpp beside Steerlab on the same weights (the `peer` section). llama.cpp is the prebuilt library the
 * npm package node-llama-cpp ships (pinned devDependency; no build, no download), run on GGUF files that
 * `lab export-gguf` wrote from the very ONNX model Steerlab loads. Variants, interleaved per repeat:
 *   steerlab            the decode engine (SteerableModel.decode), batch 1, a WAS-like steering matrix on every pass,
 *                       on the session the loader made (onnxruntime's default of one intra-op thread per core, spinning;
 *                       one thread for a model as small as the organism: src/core/model/session-threads.ts)
 *   steerlab t1         the same engine on a session of the same patched graph with one intra-op thread, no spinning
 *   steerlab unsteered  the engine on the same session, no steering matrix (what the steering itself costs)
 *   onnxruntime floor   no Steerlab code: the same session (the lean one the engine decodes on) stepped by a bare
 *                       loop, feeding back its own cache tensors and taking the argmax; the same passes as the engine
 *                       (prompt[0..n-2] unsteered, then the last prompt token and every new token with the matrix),
 *                       checked to write the engine's tokens. What onnxruntime's kernels alone cost per token: the
 *                       engine's overhead is the gap between this and `steerlab`
 *   llama.cpp <file> tN  node-llama-cpp, batch 1, unsteered, N threads
 *   llama.cpp <file> +cvec tN   llama.cpp steered: the same matrix as a control vector (`encodeControlVector`, read
 *                       by llama.cpp's own loader and applied with llama_set_adapter_cvec), decoded through llama.cpp's
 *                       C API (test/helpers/llama-capi.ts; node-llama-cpp has no control-vector call), first file only
 *   llama.cpp <file> capi tN    the same C API loop without the vector: the cost of llama.cpp's steering, and a check
 *                       that the C API loop runs as fast as node-llama-cpp's
 * Each run: a prompt of `promptTokens`, then `newTokens` greedy tokens; the decode rate counts the tokens after the
 * first (prefill excluded on both sides). Neither side stops at an end token (llama.cpp: `yieldEogToken`, so an end
 * token is handed back and fed on like any other; Steerlab: no end ids), so every run decodes the same number of
 * tokens. (A token bias against end tokens is not applied by node-llama-cpp's greedy sampler: the organism's GGUF,
 * whose greedy reply to the bench prompt starts with its end token, then wrote nothing.)
 * CPU ms per token = process CPU time (all threads) / tokens.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { patchDecoder } from '../src/core/onnx/patcher.js';
import type { OrtSessionLike } from '../src/core/model/decode.js';
import { DecodeEngine } from '../src/core/model/decode.js';
import { loadSteerableModel } from '../src/core/model/index.js';
import { encodeControlVector } from '../src/core/steering/gguf.js';
import { fromFloat16Array } from '../src/core/util/float16.js';
import { loadControlVector, openLlama } from '../test/helpers/llama-capi.js';
import { childArgs } from './child.js';
import { rotated, summarize } from './stats.js';

interface Args {
  dir: string;
  dtype: 'fp32' | 'q4' | 'q4f16';
  ggufs: { label: string; file: string }[];
  threads: number[];
  promptTokens: number;
  newTokens: number;
  reps: number;
}

const { args, done } = childArgs<Args>();
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/**
 * Every variant's clock: started at the first token (prefill excluded on both sides), read after `n` more tokens.
 * tick() is called at each token and starts the clock on the first.
 */
function clockFromFirstToken(): { tick(): void; rate(n: number): { rate: number; cpu: number } } {
  let first = 0;
  let firstCpu = 0;
  return {
    tick() {
      if (first === 0) {
        first = performance.now();
        firstCpu = cpuMs();
      }
    },
    rate: (n) => ({ rate: n / ((performance.now() - first) / 1000), cpu: (cpuMs() - firstCpu) / n }),
  };
}

const sm = await loadSteerableModel(args.dir, { dtype: args.dtype });
const eng = new DecodeEngine({ ...sm.decodeEngine().g, eosTokenIds: [] });
const graph = join(args.dir, 'onnx', args.dtype === 'fp32' ? 'model.onnx' : `model_${args.dtype}.onnx`);
const oneThread = await ort.InferenceSession.create(patchDecoder(readFileSync(graph), { weightsByReference: graph.split('/').pop()! }).bytes, {
  executionProviders: ['cpu'],
  intraOpNumThreads: 1,
  extra: { session: { 'intra_op.allow_spinning': '0', model_external_initializers_file_folder_path: dirname(graph) } },
} as never);
const eng1 = new DecodeEngine({ ...eng.g, session: oneThread as unknown as OrtSessionLike, lean: null });
const L = sm.numLayers;
const H = sm.hiddenSize;
const V = sm.vocabSize;
const matrix = new Float32Array(L * H);
for (let l = Math.ceil((2 * L) / 3); l < L; l++) for (let h = 0; h < H; h++) matrix[l * H + h] = (2 * Math.sin(h * 1.7 + 0.3)) / Math.sqrt(H / 2);
const prompt = Array.from({ length: args.promptTokens }, (_, i) => 3 + ((i * 7919) % (V - 10)));

async function steerlab(e: DecodeEngine, steered = true): Promise<{ rate: number; cpu: number }> {
  const clock = clockFromFirstToken();
  const [r] = await e.decode([{ ids: prompt, maxNewTokens: args.newTokens, ...(steered ? { steering: matrix } : {}) }], { onToken: () => clock.tick() });
  return clock.rate(r!.tokenIds.length - 1);
}

/**
 * The floor: the engine's passes with nothing around them (no row state, no batching, no stop checks, no copies):
 * tensors built inline, caches fed back as onnxruntime returned them, argmax over the logits. Returns its tokens too,
 * which must equal the engine's (else the floor would time other work).
 */
async function ortFloor(): Promise<{ rate: number; cpu: number; tokens: number[] }> {
  const sess = (eng.g.lean ?? eng.g.session) as unknown as ort.InferenceSession;
  const names = sess.inputNames;
  const pastNames = names.filter((n) => n.startsWith('past_key_values'));
  const meta = (sess as unknown as { inputMetadata?: { name: string; type?: string; shape?: unknown[] }[] }).inputMetadata?.find((m) => m.name === pastNames[0]);
  const [kvHeads, headDim] = [meta?.shape?.[1], meta?.shape?.[3]] as [number, number];
  const kvType = meta?.type === 'float16' ? 'float16' : 'float32';
  const zeros = new ort.Tensor('float32', new Float32Array(L * H), [1, L, H]);
  const steering = new ort.Tensor('float32', matrix, [1, L, H]);
  const i64 = (a: number[]) => BigInt64Array.from(a.map(BigInt));
  let kv: Record<string, ort.Tensor> = {};
  for (const p of pastNames) kv[p] = new ort.Tensor(kvType, kvType === 'float16' ? new Uint16Array(0) : new Float32Array(0), [1, kvHeads, 0, headDim]);
  let past = 0;
  const step = async (ids: number[], steer: ort.Tensor, lastOnly: boolean) => {
    const feeds: Record<string, ort.Tensor> = {
      ...kv,
      input_ids: new ort.Tensor('int64', i64(ids), [1, ids.length]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(past + ids.length).fill(1n), [1, past + ids.length]),
      steering: steer,
    };
    if (names.includes('position_ids')) feeds['position_ids'] = new ort.Tensor('int64', i64(ids.map((_, i) => past + i)), [1, ids.length]);
    if (names.includes('projection')) feeds['projection'] = zeros;
    if (names.includes('logits_from')) feeds['logits_from'] = new ort.Tensor('int64', i64([lastOnly ? ids.length - 1 : 0]), [1]);
    const out = await sess.run(feeds);
    past += ids.length;
    kv = {};
    for (const p of pastNames) kv[p] = out[p.replace('past_key_values', 'present')]!;
    const logits = out['logits']!;
    const data = logits.type === 'float16' ? fromFloat16Array(logits.data as Uint16Array) : (logits.data as Float32Array);
    // argmax inline rather than core's sampling.argmax: the floor keeps project code out of its loop (fp16 logits aside)
    const row = data.subarray(data.length - logits.dims[2]!);
    let best = 0;
    for (let v = 1; v < row.length; v++) if (row[v]! > row[best]!) best = v;
    return best;
  };
  await step(prompt.slice(0, -1), zeros, true);
  const tokens = [await step(prompt.slice(-1), steering, true)];
  const clock = clockFromFirstToken();
  clock.tick();
  while (tokens.length < args.newTokens) tokens.push(await step([tokens[tokens.length - 1]!], steering, false));
  return { ...clock.rate(tokens.length - 1), tokens };
}
{
  const [r] = await eng.decode([{ ids: prompt, maxNewTokens: args.newTokens, steering: matrix }]);
  const floor = await ortFloor();
  if (JSON.stringify(floor.tokens) !== JSON.stringify(r!.tokenIds)) {
    throw new Error(`onnxruntime floor: its tokens differ from the engine's, so it would not time the same work\n floor  ${floor.tokens.join(' ')}\n engine ${r!.tokenIds.join(' ')}`);
  }
}

const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const models = await Promise.all(args.ggufs.map((g) => llama.loadModel({ modelPath: g.file })));
async function llamaRun(mi: number, threads: number): Promise<{ rate: number; cpu: number }> {
  const model = models[mi]!;
  const ctx = await model.createContext({ contextSize: args.promptTokens + args.newTokens + 8, threads, batchSize: args.promptTokens });
  try {
    let n = 0;
    const clock = clockFromFirstToken();
    for await (const _ of ctx.getSequence().evaluate(prompt as never, { temperature: 0, yieldEogToken: true })) {
      clock.tick();
      if (++n >= args.newTokens) break;
    }
    // A run that wrote fewer than 2 tokens has no decode rate: refused by name rather than reported as a negative rate
    if (n < 2) throw new Error(`llama.cpp ${args.ggufs[mi]!.label} at ${threads} thread(s) wrote ${n} token(s) for the bench prompt; a decode rate needs at least 2`);
    return clock.rate(n - 1);
  } finally {
    await ctx.dispose();
  }
}

// llama.cpp through its C API, with and without the control vector of `matrix` (row 0 is zero: nothing is lost)
const cvFile = join(mkdtempSync(join(tmpdir(), 'steerlab-peer-')), 'steering.gguf');
writeFileSync(cvFile, encodeControlVector(matrix, { numLayers: L, hiddenSize: H, modelHint: 'llama' }).bytes);
const cvec = loadControlVector(cvFile);
rmSync(dirname(cvFile), { recursive: true, force: true });
const capi = args.threads.map((threads) => openLlama(args.ggufs[0]!.file, { contextSize: args.promptTokens + args.newTokens + 8, threads }));
function capiRun(ti: number, steered: boolean): { rate: number; cpu: number } {
  const run = capi[ti]!;
  run.setControlVector(steered ? cvec : null);
  const clock = clockFromFirstToken();
  return clock.rate(run.greedy(prompt, args.newTokens, [], () => clock.tick()).length - 1);
}

const variants: { key: string; run: () => Promise<{ rate: number; cpu: number }> }[] = [
  { key: 'steerlab', run: () => steerlab(eng) },
  { key: 'steerlab unsteered', run: () => steerlab(eng, false) },
  { key: 'steerlab t1', run: () => steerlab(eng1) },
  { key: 'onnxruntime floor', run: () => ortFloor() },
];
args.ggufs.forEach((g, i) => {
  for (const th of args.threads) variants.push({ key: `llama.cpp ${g.label} t${th}`, run: () => llamaRun(i, th) });
});
args.threads.forEach((th, ti) => {
  variants.push({ key: `llama.cpp ${args.ggufs[0]!.label} capi t${th}`, run: async () => capiRun(ti, false) });
  variants.push({ key: `llama.cpp ${args.ggufs[0]!.label} +cvec t${th}`, run: async () => capiRun(ti, true) });
});
for (const v of variants) await v.run(); // warm-up
const rates: Record<string, number[]> = {};
const cpu: Record<string, number[]> = {};
for (const v of variants) {
  rates[v.key] = [];
  cpu[v.key] = [];
}
for (let r = 0; r < args.reps; r++) {
  for (const v of rotated(variants, r)) {
    const x = await v.run();
    rates[v.key]!.push(x.rate);
    cpu[v.key]!.push(x.cpu);
  }
}
for (const run of capi) run.dispose();
await Promise.all(models.map((m) => m.dispose()));
await llama.dispose();
await oneThread.release();
await sm.dispose();
done({
  new_tokens: args.newTokens,
  prompt_tokens: args.promptTokens,
  repeats: args.reps,
  variants: variants.map((v) => ({
    variant: v.key,
    tok_s: summarize(rates[v.key]!),
    cpu_ms_per_token: summarize(cpu[v.key]!),
    // Steerlab's rate over this variant's, paired per repeat (> 1: Steerlab faster)
    steerlab_ratio: summarize(rates['steerlab']!.map((s, i) => s / rates[v.key]![i]!)),
    // the onnxruntime floor's rate over this variant's: what any loop over this session could reach
    floor_ratio: summarize(rates['onnxruntime floor']!.map((s, i) => s / rates[v.key]![i]!)),
  })),
});
