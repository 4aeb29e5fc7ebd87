/**
 * Child: patch one model file in memory (what loadSteerableModel does) and report time and peak extra memory.
 * Peak extra memory = peak RSS during the first patch minus RSS once the input file is in memory: what patching
 * costs on top of holding the model, which a loader holds anyway. The process is fresh, so the peak is this
 * patch's own. Later repeats only time the patch (the peak RSS is a high-water mark and cannot be reset).
 */
import { readFileSync } from 'node:fs';
import { patchDecoder } from '../src/core/onnx/patcher.js';
import { childArgs } from './child.js';
import { summarize } from './stats.js';

interface Args {
  onnxPath: string;
  reps: number;
  /** rename the external data file like the loader does */
  externalData: boolean;
}

const { args, done } = childArgs<Args>();
const rssBeforeRead = process.memoryUsage.rss();
const input = readFileSync(args.onnxPath);
const rssWithInput = process.memoryUsage.rss();
const peakBefore = process.resourceUsage().maxRSS * 1024;
const opts = args.externalData ? { renameExternalData: { 'model.onnx_data': 'model_steerable.onnx_data' } } : {};

const t0 = performance.now();
let out: Uint8Array | null = patchDecoder(input, opts).bytes;
const first = (performance.now() - t0) / 1000;
const peak = process.resourceUsage().maxRSS * 1024;
const outBytes = out.length;
out = null;

const times = [first];
for (let r = 1; r < args.reps; r++) {
  const t = performance.now();
  patchDecoder(input, opts);
  times.push((performance.now() - t) / 1000);
}
done({
  file_bytes: input.length,
  output_bytes: outBytes,
  seconds: summarize(times),
  first_seconds: first,
  rss_before_read: rssBeforeRead,
  rss_with_input: rssWithInput,
  peak_rss_before_patch: peakBefore,
  peak_rss: peak,
  peak_extra_bytes: peak - Math.max(rssWithInput, 0),
});
