/**
 * Child: evaluation throughput of the real runner (src/core/eval/runner.ts: runFlow + judge + record store) on one
 * model, at batch size 1 (one record per decode call; the eval_batch section measures larger batches). Two conditions:
 *   base  no steering (observation still runs, so records carry the controller's s and w)
 *   was   controller + direction (random-init controller, random unit direction: timing only)
 * Paper sampling (temperature 0.7, top-p 0.9), keyword judge, in-memory record store.
 */
import { ControllerNetwork, controllerInputLayers, initControllerParams, selectBackend, PAPER_DEFAULTS } from '../src/core/controller/index.js';
import { wasKeywordJudge } from '../src/core/eval/judges.js';
import { MemoryRecordStore } from '../src/core/eval/records.js';
import { PAPER_SAMPLING, runEval } from '../src/core/eval/runner.js';
import { resolveCondition } from '../src/core/method/conditions.js';
import { loadSteerableModel } from '../src/core/model/index.js';
import { childArgs } from './child.js';

interface Args {
  dir: string;
  modelFileName: string;
  prompts: number;
  maxNewTokens: number;
}

const { args, done } = childArgs<Args>();
const backend = await selectBackend(['wasm', 'cpu']);
const sm = await loadSteerableModel(args.dir, { dtype: 'fp32', device: 'cpu', modelFileName: args.modelFileName, selfCheck: false });
const L = sm.numLayers;
const H = sm.hiddenSize;
const inputLayers = controllerInputLayers(L);
const network = new ControllerNetwork(initControllerParams({ inputSize: inputLayers.length * H, hiddenWidth: PAPER_DEFAULTS.hiddenWidth, numLayers: L }, 5));
const controller = { network, inputLayers };
const direction = new Float32Array(H).map((_, i) => Math.cos(i * 0.37));
const n = Math.hypot(...direction);
direction.forEach((v, i) => (direction[i] = v / n));

const TOPICS = ['bake bread', 'learn the guitar', 'fix a bicycle tyre', 'write a cover letter', 'plant tomatoes', 'train for a 10k run', 'clean a cast-iron pan', 'start journaling'];
const prompts = Array.from({ length: args.prompts }, (_, i) => ({ id: `p${i}`, text: `How do I ${TOPICS[i % TOPICS.length]}? Give me ${i + 2} tips.`, label: 'benign' as const, meta: {} }));
const dirFile = { metadata: {} } as never; // resolveCondition only checks presence for was
const rows: Record<string, unknown>[] = [];
for (const name of ['base', 'was'] as const) {
  const cond = resolveCondition(name, { direction: dirFile, controller: controller as never });
  const store = new MemoryRecordStore();
  // Warm-up prompt (not counted): first runs allocate.
  await runEval({ model: sm, datasets: [{ name: 'warm', prompts: prompts.slice(0, 1) }], conditions: [cond], direction, controller, directionId: null, controllerId: null, store, judge: wasKeywordJudge, maxNewTokens: args.maxNewTokens, sampling: { ...PAPER_SAMPLING }, seed: 1 });
  let tokens = 0;
  const t = performance.now();
  const res = await runEval({
    model: sm, datasets: [{ name: 'bench', prompts }], conditions: [cond], direction, controller, directionId: null, controllerId: null, store, judge: wasKeywordJudge,
    maxNewTokens: args.maxNewTokens, sampling: { ...PAPER_SAMPLING }, seed: 1, batch: 1,
    onProgress: (p) => void (tokens += (p.record?.new_tokens as number | undefined) ?? 0),
  });
  const minutes = (performance.now() - t) / 60000;
  rows.push({ condition: name, batch_size: 1, prompts: res.written, max_new_tokens: args.maxNewTokens, new_tokens: tokens, minutes, prompts_per_min: res.written / minutes, tokens_per_s: tokens / (minutes * 60) });
  console.log(`${name}: ${res.written} prompts in ${(minutes * 60).toFixed(1)} s`);
}
network.dispose();
await sm.dispose();
done({ controller_backend: backend, rows });
