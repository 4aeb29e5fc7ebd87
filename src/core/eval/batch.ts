/**
 * How many eval records (prompt x condition) the runner decodes together (runner.ts runEval, one forward pass per
 * token for the whole batch). The records do not depend on it; only throughput does. Kept apart from the runner so
 * the lab's UI can pick a size without importing the model code.
 */

/**
 * `lab eval`'s default. Node on the SmolLM2-135M shape (bench/RESULTS.md eval_batch, quiet 2-core machine): batch 8
 * ran 1.94x and batch 16 2.17x the prompts per minute of batch 1; 8 keeps memory modest on larger models.
 */
export const DEFAULT_EVAL_BATCH = 8;

/**
 * The lab's batch for the device its model runs on. WASM: 8. In headless Chromium on the SmolLM2-135M shape
 * (bench/RESULTS.md eval_batch) 16 has since measured 7-16 % faster than 8 (1.85x against 1.59x batch 1's rate, with
 * the prefix hand-over), but records are written a batch at a time and a Stop drops the batch under way (a resume
 * runs it again), so 8 shows results twice as often and loses half as much, for most of that speed. WebGPU: 16,
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

