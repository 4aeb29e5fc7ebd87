/**
 * Benchmark page: the eval runner (runEval, what the lab's evaluate op runs) on onnxruntime-web WASM in the page
 * itself, for the `eval_batch` section's browser rows. Exposes window.benchEvalBatch; the model folder is mounted by
 * the child.
 */
import { env } from '@huggingface/transformers';
import { loadSteerableModel } from '../../src/core/model/index.js';
import { ortWasmPaths } from '../../workers/ort-assets.js';
import { wasmThreads } from '../../workers/device.js';
import { evalInBatches, type EvalTimes } from '../eval-batch-common.js';

const onnx = env.backends.onnx as { wasm?: { wasmPaths?: unknown; numThreads?: number }; versions?: { web?: string } };
onnx.wasm!.wasmPaths = ortWasmPaths(new URL('/', location.origin), onnx.versions?.web);
// the thread count the lab's LLM worker runs with
onnx.wasm!.numThreads = wasmThreads(self.crossOriginIsolated, navigator.hardwareConcurrency);

export interface EvalBatchRequest {
  model: string;
  localModelPath: string;
  messages: string[];
  batches: number[];
  maxNewTokens: number;
  reps: number;
}

async function run(req: EvalBatchRequest) {
  env.localModelPath = req.localModelPath;
  env.allowLocalModels = true;
  env.allowRemoteModels = false;
  const t0 = performance.now();
  const sm = await loadSteerableModel(req.model, { device: 'wasm', dtype: 'fp32' });
  const loadS = (performance.now() - t0) / 1000;
  const prompts = req.messages.map((m) => sm.formatChat(m).ids);
  const once = (B: number) => evalInBatches(sm, req.messages, B, req.maxNewTokens);
  await evalInBatches(sm, req.messages.slice(0, 2), 2, 2); // warm-up
  const samples: { batch: number; rep: number; seconds: number; tokens: number; replies: string; times: EvalTimes }[] = [];
  for (let r = 0; r < req.reps; r++) {
    const k = r % req.batches.length;
    for (const B of [...req.batches.slice(k), ...req.batches.slice(0, k)]) {
      samples.push({ batch: B, rep: r, ...(await once(B)) });
    }
  }
  await sm.dispose();
  // every batch size must write the replies of batch 1
  const reference = samples.find((x) => x.batch === req.batches[0])!.replies;
  return { loadS, promptTokens: prompts.map((p) => p.length), samples: samples.map(({ replies, ...x }) => ({ ...x, equal: replies === reference })) };
}

(window as unknown as { benchEvalBatch: typeof run }).benchEvalBatch = run;
