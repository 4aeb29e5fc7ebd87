/**
 * How many eval rows the runner decodes together (runner.ts runEval, one forward pass per token for the whole batch;
 * a base record the calibration already decoded takes no row). The records do not depend on it; only throughput
 * does. Kept apart from the runner so the lab's UI can pick a size without importing the model code.
 */

/**
 * `lab eval`'s default. Node on the SmolLM2-135M shape (bench/RESULTS.md eval_batch, 2-core machine): batch 8 ran
 * 2.43x and batch 16 2.69x the prompts per minute of batch 1; 8 keeps memory modest on larger models.
 */
export const DEFAULT_EVAL_BATCH = 8;

/**
 * The lab's batch for the device its model runs on. WASM: 8. In headless Chromium on the SmolLM2-135M shape
 * (bench/RESULTS.md eval_batch, 2 threads) batch 16 was no faster than 8 on 16 prompts (37.7 against 37.5 prompts/min):
 * onnxruntime-web's WASM kernels are compute-bound by then. Records are written a batch at a time and a Stop drops the
 * batch under way (a resume runs it again), so the smaller batch also shows results sooner and loses less. WebGPU: 16,
 * because a decode step there is bound by kernel dispatch more than by arithmetic at these model sizes, so more rows
 * per step come nearly free; an estimate, not measured (the bench's headless Chromium has no GPU).
 */
export function evalBatchForDevice(device: 'wasm' | 'webgpu'): number {
  return device === 'webgpu' ? 16 : 8;
}

/** A batch size: an integer >= 1 (the number of (prompt, condition) records decoded together). */
export function checkBatch(batch: number | undefined, what = 'eval batch'): number {
  const b = batch ?? DEFAULT_EVAL_BATCH;
  if (!Number.isInteger(b) || b < 1) throw new Error(`${what} must be an integer >= 1 (records decoded together), got ${String(batch)}`);
  return b;
}

