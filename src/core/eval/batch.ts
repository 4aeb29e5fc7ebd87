/**
 * How many eval rows the runner decodes together (runner.ts runEval, one forward pass per token for the whole batch;
 * a base record the calibration already decoded takes no row). The records do not depend on it; only throughput
 * does. Kept apart from the runner so the lab's UI can pick a size without importing the model code.
 */

/**
 * `lab eval`'s default. Node on the SmolLM2-135M shape (bench/RESULTS.md eval_batch, 2-core machine): batch 8 ran
 * 2.54x and batch 16 2.67x the prompts per minute of batch 1; 8 keeps memory modest on larger models.
 */
export const DEFAULT_EVAL_BATCH = 8;

/**
 * The lab's batch for the device its model runs on. WASM: 8. In headless Chromium on the SmolLM2-135M shape
 * (bench/RESULTS.md eval_batch, 2 threads) batch 16 gains little over 8 on short prompts (1.78x against 2.04x batch 1
 * in one run, 1.88x against 1.91x in another: onnxruntime-web's WASM kernels are compute-bound by then), more on
 * ToxicChat's long-tailed ones (1.63x against 2.07x, one repeat). Records are written a window of batches at a time
 * (LENGTH_SORT_WINDOW) and a Stop drops the window under way (a resume runs it again), so the smaller batch shows
 * results sooner and loses less; that tips it until more repeats say otherwise. WebGPU: 16, because a decode step
 * there is bound by kernel dispatch more than by arithmetic at these model sizes, so more rows per step come nearly
 * free; an estimate, not measured (the bench's headless Chromium has no GPU).
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


/**
 * Batches per scheduling window of the runner. The runner takes this many batches' worth of rows at a time and
 * decodes them shortest prompt first, so each batch holds prompts of similar length: rows of one batch are padded to
 * its longest prompt, and every step's attention and KV-cache copies grow with that padded length. On ToxicChat's first
 * 64 test prompts (median 47 tokens, longest 723; Node, SmolLM2-135M shape) batch 16 ran 1.5–1.6x faster this way
 * than in file order (29.5–33.0 -> 48.5–49.5 prompts/min; batch 1: 23.6). Records are still
 * written in file order, each as soon as every record before it in the window is done, so a Stop loses at most one
 * window. The records themselves do not depend on the batches they ran in.
 */
export const LENGTH_SORT_WINDOW = 4;

/**
 * Groups row indices into batches of at most `batch`, shortest first (`lengths`: one sort key per row, e.g. the prompt's
 * length). Ties keep their order, so the rows of one prompt stay next to each other.
 */
export function lengthBatches(lengths: readonly number[], batch: number): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[a]! - lengths[b]! || a - b);
  const out: number[][] = [];
  for (let k = 0; k < order.length; k += batch) out.push(order.slice(k, k + batch));
  return out;
}
