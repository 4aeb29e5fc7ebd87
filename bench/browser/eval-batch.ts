/**
 * Benchmark page: the decode engine (SteerableModel.decode) on onnxruntime-web WASM in the page itself, for the
 * `eval_batch` section's browser rows. Exposes window.benchEvalBatch; the model folder is mounted by the child.
 */
import { env } from '@huggingface/transformers';
import { loadSteerableModel } from '../../src/core/model/index.js';
import { ortWasmPaths } from '../../workers/ort-assets.js';

const onnx = env.backends.onnx as { wasm?: { wasmPaths?: unknown }; versions?: { web?: string } };
onnx.wasm!.wasmPaths = ortWasmPaths(location.origin, '/', onnx.versions?.web);

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
  const L = sm.numLayers;
  const H = sm.hiddenSize;
  const dir = new Float32Array(H).map((_, h) => Math.sin(h * 1.7 + 0.3) / Math.sqrt(H / 2));
  const observe = (res: Float32Array) => {
    const s = Math.tanh(res[L * H]!);
    const m = new Float32Array(L * H);
    for (let l = Math.ceil((2 * L) / 3); l < L; l++) m.set(dir.map((x) => 4 * s * x), l * H);
    return m;
  };
  const prompts = req.messages.map((m) => sm.formatChat(m).ids);
  const once = async (B: number) => {
    const t = performance.now();
    let tokens = 0;
    for (let i = 0; i < prompts.length; i += B) {
      const rows = prompts.slice(i, i + B).map((ids) => ({ ids, maxNewTokens: req.maxNewTokens, steering: { observe } }));
      for (const r of await sm.decode(rows)) tokens += r.tokenIds.length;
    }
    return { seconds: (performance.now() - t) / 1000, tokens };
  };
  await once(Math.max(...req.batches)); // warm-up
  const samples: { batch: number; rep: number; seconds: number; tokens: number }[] = [];
  for (let r = 0; r < req.reps; r++) {
    const k = r % req.batches.length;
    for (const B of [...req.batches.slice(k), ...req.batches.slice(0, k)]) samples.push({ batch: B, rep: r, ...(await once(B)) });
  }
  await sm.dispose();
  return { loadS, promptTokens: prompts.map((p) => p.length), samples };
}

(window as unknown as { benchEvalBatch: typeof run }).benchEvalBatch = run;
