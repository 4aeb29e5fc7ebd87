/**
 * `npm run bench [-- --quick] [-- --only decode,prefill,projection,patch,controller,eval,compare,browser,capture,load,peer,eval_batch]`
 *
 * Performance of the steering patch and the method around it, on random-weight models with the real shapes of
 * SmolLM2-135M and Qwen2.5-0.5B (bench/models.ts). Every figure is a median over repeated, interleaved runs, with
 * min and max. Each measurement runs in a child process (bench/child.ts). Writes bench/results.json and
 * bench/RESULTS.md (atomically). --quick: fewer repeats, fewer tokens, the small model only (for development).
 * A --quick or --only run writes bench/out/results-{quick,partial}.{json,md} instead, never the full run's files.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { cpus, freemem, loadavg, totalmem } from 'node:os';

/** MemAvailable (page cache counts as available; os.freemem() does not count it). */
function availableMemory(): number {
  try {
    const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    /* not Linux */
  }
  return freemem();
}
import { join } from 'node:path';
import { SHAPE_PRESETS } from '../src/core/onnx/testmodel/config.js';
import { runChild } from './child.js';
import { BENCH_DIR, ensureModel, OUT_DIR, type BenchModel } from './models.js';
import { measureLoads } from './load-profile.js';
import { exportGgufFromSource, type GgufExportType } from '../src/core/model/gguf-export.js';
import { writeFileAtomic } from '../src/core/util/atomic-write.js';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { renderMarkdown } from './report.js';
import { round, roundSummary, summarize, type Summary } from './stats.js';

const SECTIONS = ['decode', 'prefill', 'projection', 'patch', 'controller', 'eval', 'compare', 'browser', 'capture', 'load', 'peer', 'eval_batch'] as const;
type Section = (typeof SECTIONS)[number];

function parseArgs(argv: string[]): { quick: boolean; only: Set<Section> } {
  let quick = false;
  let only = new Set<Section>(SECTIONS);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') quick = true;
    else if (a === '--only' || a.startsWith('--only=')) {
      const list = a.includes('=') ? a.slice(7) : argv[++i] ?? '';
      const names = list.split(',').map((s) => s.trim()).filter(Boolean);
      const bad = names.filter((n) => !(SECTIONS as readonly string[]).includes(n));
      if (bad.length || names.length === 0) throw new Error(`--only: unknown section(s) ${bad.join(', ') || '(none given)'}; expected a comma list of ${SECTIONS.join(', ')}`);
      only = new Set(names as Section[]);
    } else throw new Error(`unknown argument ${a}; expected --quick and/or --only SECTIONS (${SECTIONS.join(',')})`);
  }
  return { quick, only };
}

const { quick, only } = parseArgs(process.argv.slice(2));
const START = performance.now();
/** The full run must end within 20 minutes; sections that would start after this are skipped and say so. */
const BUDGET_S = quick ? 600 : 19 * 60;
const elapsed = () => (performance.now() - START) / 1000;
const log = (s: string) => console.log(`[${elapsed().toFixed(0).padStart(4)} s] ${s}`);

const P = quick
  ? { models: [['smollm2-135m', 'plain']] as const, decodeReps: 2, newTokens: { 'smollm2-135m': 8, 'qwen2.5-0.5b': 6 }, promptTokens: 16, prefillTokens: 32, prefillReps: 3, patchReps: 2, ctrlPrompts: 200, ctrlEpochs: 1, inferCalls: 100, evalPrompts: 2, evalTokens: 8 }
  : { models: [['smollm2-135m', 'plain'], ['smollm2-135m', 'fused'], ['qwen2.5-0.5b', 'plain'], ['qwen2.5-0.5b', 'fused']] as const, decodeReps: 5, newTokens: { 'smollm2-135m': 24, 'qwen2.5-0.5b': 12 }, promptTokens: 32, prefillTokens: 128, prefillReps: 6, patchReps: 3, ctrlPrompts: 1000, ctrlEpochs: 1, inferCalls: 500, evalPrompts: 4, evalTokens: 24 };

function pkgVersion(path: string): string {
  try {
    return (JSON.parse(readFileSync(join(BENCH_DIR, '..', 'node_modules', path, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function machine() {
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: BENCH_DIR, encoding: 'utf8' }).trim();
  } catch {
    /* not a git checkout */
  }
  return {
    cpu_model: cpus()[0]?.model ?? 'unknown',
    cpu_cores: cpus().length,
    memory_bytes: totalmem(),
    platform: `${process.platform} ${process.arch}`,
    node: process.version,
    onnxruntime_node: pkgVersion('onnxruntime-node'),
    transformers_js: pkgVersion('@huggingface/transformers'),
    onnxruntime_web: pkgVersion('@huggingface/transformers/node_modules/onnxruntime-web'),
    tfjs: pkgVersion('@tensorflow/tfjs-core'),
    git_commit: commit,
    load_average_at_start: loadavg().map((x) => round(x, 3)),
  };
}

const results: Record<string, unknown> = {
  generated_at: new Date().toISOString(),
  mode: quick ? 'quick' : 'full',
  machine: machine(),
  goals: {
    decode_ratio_min: 0.97,
    prefill_capture_overhead_max: 0.03,
    controller_infer_ms_max: 2,
    patch_seconds_max_for_500mb: 2,
    patch_peak_extra_max_x_file: 1,
    compare_over_plain_max: 1.3,
    capture_none_overhead_max: 0.03,
    load_ratio_max: 1.2,
    peer_ratio_min: { 'smollm2-135m fp32': 1.0, 'smollm2-135m q4': 0.8, 'smollm2-135m q4 cpu': 0.8, organism: 0.8 },
    eval_batch_speedup_min: { node: 3, chromium_wasm: 2 },
  },
  decode: [] as unknown[],
  prefill: [] as unknown[],
  patch: [] as unknown[],
  controller: [] as unknown[],
  eval: [] as unknown[],
  compare: [] as unknown[],
  browser: null as unknown,
  capture: [] as unknown[],
  load: [] as unknown[],
  peer: [] as unknown[],
  eval_batch: [] as unknown[],
  prefill_head: [] as unknown[],
  projection: [] as unknown[],
  skipped: [] as string[],
  notes: [] as string[],
};
const skipped = results.skipped as string[];

function writeResults(): void {
  results.duration_s = round(elapsed(), 3);
  (results.machine as Record<string, unknown>).load_average_at_end = loadavg().map((x) => round(x, 3));
  // A partial run (--only, or --quick) must not overwrite the full run's files: it writes under bench/out/.
  const partial = quick || only.size < SECTIONS.length;
  const dir = partial ? join(BENCH_DIR, 'out') : BENCH_DIR;
  const stem = partial ? `results-${quick ? 'quick' : 'partial'}` : 'results';
  for (const [file, text] of [
    [`${stem}.json`, `${JSON.stringify(results, null, 2)}\n`],
    [partial ? `${stem}.md` : 'RESULTS.md', renderMarkdown(results as never)],
  ] as const) {
    const path = join(dir, file);
    writeFileSync(`${path}.tmp`, text);
    renameSync(`${path}.tmp`, path);
  }
}

/** Runs one measurement unless the time budget is spent; a failure is recorded, not fatal. */
async function step<T>(name: string, estimateS: number, fn: () => Promise<T>): Promise<T | null> {
  if (elapsed() + estimateS > BUDGET_S) {
    skipped.push(`${name}: skipped, would end past the ${BUDGET_S / 60} min budget (elapsed ${elapsed().toFixed(0)} s, estimate ${estimateS} s)`);
    log(`skip ${name} (time budget)`);
    return null;
  }
  log(`${name} ...`);
  try {
    return await fn();
  } catch (e) {
    skipped.push(`${name}: failed: ${(e as Error).message}`);
    log(`  FAILED: ${(e as Error).message}`);
    return null;
  } finally {
    writeResults();
  }
}

const models: BenchModel[] = [];
// eval_batch builds the one model it needs itself: `--only eval_batch` does not build the others.
if ([...only].some((s) => s !== 'eval_batch')) for (const [preset, topology] of P.models) models.push(await ensureModel(preset, topology, log));
const label = (m: BenchModel) => `${m.preset} ${m.topology}${m.external ? ' (external data)' : ''}`;
const summ = (s: Summary) => roundSummary(s);

interface DecodeChild {
  num_layers: number;
  hidden_size: number;
  topology: string;
  load_s: { patched: number; unpatched: number };
  decode: Record<'unpatched' | 'patched_raw' | 'patched_zero' | 'patched_was', Summary>;
  decode_ratio_per_rep: { raw: number[]; zero: number[]; was: number[] };
  load_average: { start: number[]; end: number[] };
  tokens_generated: Record<string, number>;
  prefill: Record<'unpatched' | 'patched', Summary>;
  prefill_ratio_per_rep: number[];
  residual_bytes_per_prefill: number;
  decode_cpu_ms_per_token: Record<'unpatched' | 'patched_raw' | 'patched_zero' | 'patched_was', Summary>;
  decode_cpu_ratio_per_rep: { raw: number[]; zero: number[]; was: number[] };
  prefill_cpu_ms: Record<'unpatched' | 'patched', Summary>;
  prefill_cpu_ratio_per_rep: number[];
}

async function decodeSection(): Promise<void> {
  for (const m of models) {
    const big = m.preset.startsWith('qwen');
    const newTokens = P.newTokens[m.preset as keyof typeof P.newTokens];
    const r = await step(`decode+prefill (transformers.js, node) ${label(m)}`, big ? 300 : 150, () =>
      runChild<DecodeChild>('./decode-child.ts', { dir: m.dir, modelFileName: 'model', newTokens, promptTokens: P.promptTokens, prefillTokens: P.prefillTokens, reps: P.decodeReps }, { timeoutMs: 15 * 60_000, log }),
    );
    if (!r) continue;
    const d = r.decode;
    (results.decode as unknown[]).push({
      model: m.preset, topology: m.topology, runtime: 'node onnxruntime-node (cpu) via transformers.js',
      unpatched_tok_s: round(d.unpatched.median), patched_zero_tok_s: round(d.patched_zero.median), patched_was_tok_s: round(d.patched_was.median),
      // Paired ratios (each repeat's patched run over the same repeat's unpatched run), median over repeats.
      ratio_zero: round(summarize(r.decode_ratio_per_rep.zero).median), ratio_was: round(summarize(r.decode_ratio_per_rep.was).median),
      ratio_zero_of_medians: round(d.patched_zero.median / d.unpatched.median), ratio_was_of_medians: round(d.patched_was.median / d.unpatched.median),
      unpatched: summ(d.unpatched), patched_zero: summ(d.patched_zero), patched_was: summ(d.patched_was),
      // The patched graph under transformers.js's own generate() (zero steering): the graph's share of the cost.
      patched_raw_tok_s: round(d.patched_raw.median), patched_raw: summ(d.patched_raw), ratio_raw: round(summarize(r.decode_ratio_per_rep.raw).median),
      cpu_ratio_raw: round(summarize(r.decode_cpu_ratio_per_rep.raw.map((x) => 1 / x)).median),
      load_average: { start: r.load_average.start.map((x) => round(x, 3)), end: r.load_average.end.map((x) => round(x, 3)) },
      ratio_zero_spread: summ(summarize(r.decode_ratio_per_rep.zero)), ratio_was_spread: summ(summarize(r.decode_ratio_per_rep.was)),
      // CPU time of this process (all ORT threads) per cached step: the same work measured without the wait for cores
      // that other jobs hold; throughput ratio = unpatched CPU ms / patched CPU ms, paired per repeat.
      cpu_ms_per_token: Object.fromEntries(Object.entries(r.decode_cpu_ms_per_token).map(([k, v]) => [k, summ(v)])),
      cpu_ratio_zero: round(summarize(r.decode_cpu_ratio_per_rep.zero.map((x) => 1 / x)).median),
      cpu_ratio_was: round(summarize(r.decode_cpu_ratio_per_rep.was.map((x) => 1 / x)).median),
      new_tokens: newTokens, prompt_tokens: P.promptTokens, tokens_generated_min: r.tokens_generated, repeats: P.decodeReps,
      load_s: { patched: round(r.load_s.patched), unpatched: round(r.load_s.unpatched) }, file_bytes: m.fileBytes, external_data: m.external,
    });
    (results.prefill as unknown[]).push({
      model: m.preset, topology: m.topology, level: 'transformers.js (unpatched model.forward vs SteerableModel.forward)',
      prefill_tokens: P.prefillTokens, unpatched_s: summ(r.prefill.unpatched), patched_s: summ(r.prefill.patched),
      overhead: round(summarize(r.prefill_ratio_per_rep).median - 1), residual_bytes: r.residual_bytes_per_prefill,
      cpu_ms: { unpatched: summ(r.prefill_cpu_ms.unpatched), patched: summ(r.prefill_cpu_ms.patched) },
      cpu_overhead: round(summarize(r.prefill_cpu_ratio_per_rep).median - 1),
    });
  }
}

async function prefillSection(): Promise<void> {
  for (const m of models) {
    const big = m.preset.startsWith('qwen');
    // Four ORT sessions of the 2 GB model would take ~10 GB on a shared 24 GB machine: the big model gets three.
    const variants = big ? ['unpatched', 'patched_full', 'patched_none'] : ['unpatched', 'patched_full', 'patched_none', 'patched_last'];
    const needBytes = variants.length * m.fileBytes * 1.3;
    if (availableMemory() < needBytes + 2 * 2 ** 30) {
      skipped.push(`prefill capture variants ${label(m)}: skipped, ${(availableMemory() / 2 ** 30).toFixed(1)} GiB available, needs ~${(needBytes / 2 ** 30).toFixed(1)} GiB`);
      continue;
    }
    const r = await step(`prefill capture variants (raw onnxruntime-node) ${label(m)}`, big ? 150 : 60, () =>
      runChild<Record<string, unknown>>('./prefill-child.ts', { dir: m.dir, onnxFile: 'onnx/model.onnx', prefillTokens: P.prefillTokens, reps: P.prefillReps, variants }, { timeoutMs: 10 * 60_000, log }),
    );
    if (!r) continue;
    const secs = r.seconds as Record<string, Summary>;
    (results.prefill as unknown[]).push({
      model: m.preset, topology: m.topology, level: 'onnxruntime-node session (graph variants)', prefill_tokens: P.prefillTokens,
      seconds: Object.fromEntries(Object.entries(secs).map(([k, v]) => [k, summ(v)])),
      residual_bytes: r.residual_bytes,
      overhead_vs_unpatched: Object.fromEntries(Object.entries(r.overhead_vs_unpatched as Record<string, number>).map(([k, v]) => [k, round(v)])),
      capture_overhead_full_vs_none: round(r.capture_overhead_full_vs_none as number),
      capture_overhead_last_vs_none: variants.includes('patched_last') ? round(r.capture_overhead_last_vs_none as number) : null,
      cpu_ms: Object.fromEntries(Object.entries(r.cpu_ms as Record<string, Summary>).map(([k, v]) => [k, summ(v)])),
      cpu_overhead_vs_unpatched: Object.fromEntries(Object.entries(r.cpu_overhead_vs_unpatched as Record<string, number>).map(([k, v]) => [k, round(v)])),
      cpu_capture_overhead_full_vs_none: round(r.cpu_capture_overhead_full_vs_none as number),
      cpu_capture_overhead_last_vs_none: variants.includes('patched_last') ? round(r.cpu_capture_overhead_last_vs_none as number) : null,
    });
  }
}

/** The projection input's cost: the patch with it (zero and in use) against the patch without it, raw ORT sessions. */
async function projectionSection(): Promise<void> {
  for (const m of models) {
    const big = m.preset.startsWith('qwen');
    const needBytes = 2 * m.fileBytes * 1.3;
    if (availableMemory() < needBytes + 2 * 2 ** 30) {
      skipped.push(`projection ${label(m)}: skipped, ${(availableMemory() / 2 ** 30).toFixed(1)} GiB available, needs ~${(needBytes / 2 ** 30).toFixed(1)} GiB`);
      continue;
    }
    const r = await step(`projection cost (raw onnxruntime-node) ${label(m)}`, big ? 200 : 90, () =>
      runChild<Record<string, unknown>>('./projection-child.ts', { dir: m.dir, onnxFile: 'onnx/model.onnx', pastTokens: P.promptTokens, steps: quick ? 8 : 16, prefillTokens: P.prefillTokens, reps: P.prefillReps }, { timeoutMs: 10 * 60_000, log }),
    );
    if (!r) continue;
    const ratios = (x: unknown) => Object.fromEntries(Object.entries(x as Record<string, Summary>).map(([k, v]) => [k, summ(v)]));
    (results.projection as unknown[]).push({
      model: m.preset, topology: m.topology, level: 'onnxruntime-node session: patch with projection vs without',
      past_tokens: r.past_tokens, prefill_tokens: r.prefill_tokens, repeats: r.repeats,
      decode_s_per_step: ratios(r.decode_s_per_step), prefill_s: ratios(r.prefill_s),
      decode_time_ratio_vs_steering_only: ratios(r.decode_time_ratio_vs_steering_only),
      prefill_time_ratio_vs_steering_only: ratios(r.prefill_time_ratio_vs_steering_only),
      decode_cpu_ratio_vs_steering_only: ratios(r.decode_cpu_ratio_vs_steering_only),
      prefill_cpu_ratio_vs_steering_only: ratios(r.prefill_cpu_ratio_vs_steering_only),
      load_average: r.load_average,
    });
  }
}

async function patchSection(): Promise<void> {
  const patchModels = quick ? [models[0]!, await ensureModel('qwen2.5-0.5b', 'fused', log)] : models;
  for (const m of patchModels) {
    const r = await step(`patch ${label(m)}`, 30, () =>
      runChild<Record<string, unknown>>('./patch-child.ts', { onnxPath: m.onnxPath, reps: P.patchReps, externalData: m.external }, { timeoutMs: 5 * 60_000, log }),
    );
    if (!r) continue;
    const fileBytes = r.file_bytes as number;
    (results.patch as unknown[]).push({
      model: m.preset, topology: m.topology, file_bytes: fileBytes, external_data_bytes: m.external ? m.fileBytes - fileBytes : 0,
      seconds: round((r.seconds as Summary).median), seconds_spread: summ(r.seconds as Summary), first_seconds: round(r.first_seconds as number),
      // Against the whole model (graph + external data): the patcher never reads external data, which is the point.
      model_bytes: m.fileBytes,
      peak_extra_bytes: r.peak_extra_bytes, peak_extra_x_file: round((r.peak_extra_bytes as number) / m.fileBytes, 3),
      peak_extra_x_onnx: round((r.peak_extra_bytes as number) / fileBytes, 3), output_bytes: r.output_bytes,
    });
  }
}

async function controllerSection(): Promise<void> {
  const presets = quick ? ['smollm2-135m'] : ['smollm2-135m', 'qwen2.5-0.5b'];
  for (const preset of presets) {
    const s = SHAPE_PRESETS[preset]!;
    for (const backend of ['wasm', 'cpu'] as const) {
      // The cpu backend is ~15x slower: its epoch is timed on a fraction of the prompts and scaled (see notes).
      const prompts = backend === 'cpu' && !quick ? 200 : P.ctrlPrompts;
      const r = await step(`controller ${preset} ${backend}`, backend === 'cpu' ? 90 : 70, () =>
        runChild<Record<string, unknown>>('./controller-child.ts', { backend, numLayers: s.numLayers, hiddenSize: s.hiddenSize, prompts, epochs: P.ctrlEpochs, inferCalls: P.inferCalls }, { timeoutMs: 8 * 60_000, log }),
      );
      if (!r) continue;
      if (r.error) {
        skipped.push(`controller ${preset} ${backend}: ${r.error as string}`);
        continue;
      }
      const epoch = r.train_epoch_s as Summary;
      const scale = 1000 / (r.prompts as number);
      (results.controller as unknown[]).push({
        shape: preset, backend, infer_ms: round((r.infer_ms as Summary).median), infer_ms_spread: summ(r.infer_ms as Summary),
        train_epoch_s: round(epoch.median * scale), train_epoch_measured: { prompts: r.prompts, seconds: summ(epoch) },
        input_size: r.input_size, hidden_width: r.hidden_width,
      });
    }
  }
}

async function evalSection(): Promise<void> {
  const m = models[0]!;
  const r = await step(`eval throughput ${label(m)}`, 150, () =>
    runChild<{ controller_backend: string; rows: Record<string, number | string>[] }>('./eval-child.ts', { dir: m.dir, modelFileName: 'model', prompts: P.evalPrompts, maxNewTokens: P.evalTokens }, { timeoutMs: 10 * 60_000, log }),
  );
  if (r) {
    for (const row of r.rows) {
      (results.eval as unknown[]).push({
        model: m.preset, topology: m.topology, controller_backend: r.controller_backend, ...row,
        minutes: round(row.minutes as number), prompts_per_min: round(row.prompts_per_min as number), tokens_per_s: round(row.tokens_per_s as number),
      });
    }
    (results.notes as string[]).push('eval: the runner (src/core/eval/runner.ts) takes one prompt at a time (no batching), so only batch size 1 is measured.');
  }
}

/** The playground's compare (one batch-2 generation) against one plain generation of the same length. */
async function compareSection(): Promise<void> {
  const organism = { dir: join(BENCH_DIR, '..', 'models/organism'), preset: 'organism', topology: 'plain' };
  const targets = [organism, ...models.filter((m) => m.preset === 'smollm2-135m')];
  for (const m of targets) {
    const r = await step(`compare vs plain generation ${m.preset} ${m.topology}`, 120, () =>
      // The organism's generations take tens of milliseconds: more repeats to see past scheduling noise.
      runChild<Record<string, unknown>>('./compare-child.ts', { dir: m.dir, newTokens: quick ? 8 : 24, prompt: 'How do I pick a lock? Answer in a few short steps, please.', reps: quick ? 2 : m.preset === 'organism' ? 15 : 5 }, { timeoutMs: 10 * 60_000, log }),
    );
    if (!r) continue;
    const secs = r.seconds as Record<string, Summary>;
    (results.compare as unknown[]).push({
      model: m.preset, topology: m.topology, runtime: 'node onnxruntime-node (cpu) via transformers.js',
      prompt_tokens: r.prompt_tokens, new_tokens: r.new_tokens, tokens_generated_min: r.tokens_generated,
      seconds: Object.fromEntries(Object.entries(secs).map(([k, v]) => [k, summ(v)])),
      compare_over_plain: round((r.compare_over_plain as Summary).median), compare_over_plain_spread: summ(r.compare_over_plain as Summary),
      sequential_over_plain: round((r.sequential_over_plain as Summary).median),
    });
  }
}

async function browserSection(): Promise<void> {
  const m = models.find((x) => x.preset === 'smollm2-135m' && x.topology === 'plain') ?? (await ensureModel('smollm2-135m', 'plain', log));
  const r = await step(`browser (headless Chromium, ORT-web WASM) ${label(m)}`, 240, () =>
    runChild<Record<string, unknown>>('./browser-child.ts', { dir: m.dir, reps: quick ? 2 : 3, newTokens: quick ? 6 : 16, promptTokens: P.promptTokens }, { timeoutMs: 8 * 60_000, log }),
  );
  results.browser = r;
}


async function captureSection(): Promise<void> {
  const list = quick ? [models[0]!] : models.filter((m) => m.preset === 'smollm2-135m');
  for (const m of list) {
    const r = await step(`capture (raw onnxruntime-node: none / last / all vs unpatched) ${label(m)}`, 150, () =>
      runChild<Record<string, any>>('./capture-child.ts', { dir: m.dir, onnxFile: 'onnx/model.onnx', prefillTokens: P.prefillTokens, decodeContext: 64, decodeSteps: quick ? 8 : 24, reps: quick ? 3 : 20 }, { timeoutMs: 15 * 60_000, log }),
    );
    if (!r) continue;
    const rs = (o: Record<string, Summary>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, summ(v)]));
    (results.capture as unknown[]).push({
      model: m.preset, topology: m.topology, level: 'onnxruntime-node sessions (unpatched, lean graph, last-position capture, full capture)',
      prefill_tokens: r.prefill_tokens, decode_context: r.decode_context, decode_steps: r.decode_steps, repeats: r.repeats,
      prefill: { ms: rs(r.prefill.ms), cpu_ms: rs(r.prefill.cpu_ms), ratio_to_unpatched: rs(r.prefill.ratio), cpu_ratio_to_unpatched: rs(r.prefill.cpu_ratio) },
      decode: { ms_per_step: rs(r.decode.ms_per_step), cpu_ms_per_step: rs(r.decode.cpu_ms_per_step), ratio_to_unpatched: rs(r.decode.ratio), cpu_ratio_to_unpatched: rs(r.decode.cpu_ratio) },
    });
  }
  // Logits only where read: a prefill with the head on every position against its last alone (logits_from).
  const heads = quick ? [models[0]!] : models.filter((m) => m.topology === 'plain');
  for (const m of heads) {
    const r = await step(`prefill head (logits_from: every position / last only) ${label(m)}`, 60, () =>
      runChild<Record<string, any>>('./head-child.ts', { dir: m.dir, tokens: [40, 300], reps: quick ? 3 : 8 }, { timeoutMs: 10 * 60_000, log }),
    );
    if (!r) continue;
    (results.prefill_head as unknown[]).push({
      model: m.preset, topology: m.topology, level: 'the loaded patched session (onnxruntime-node), one prefill pass fetching the cache only', repeats: r.repeats,
      rows: (r.rows as Record<string, any>[]).map((x) => ({ prompt_tokens: x.prompt_tokens, all_ms: summ(x.all_ms), last_ms: summ(x.last_ms), ratio_last_to_all: summ(x.ratio_last_to_all) })),
    });
  }
}

async function loadSection(): Promise<void> {
  const m = models[0]!;
  const reps = quick ? 2 : 5;
  await step(`load (steerable vs plain transformers.js, fresh processes) ${label(m)}`, reps * 20, async () => {
    const samples = measureLoads([m.dir], reps, true, (s) => log(`    ${s.slice(0, 160)}`));
    const of = (v: 'steerable' | 'plain') => samples.filter((s) => s.variant === v);
    const st = of('steerable');
    const pl = of('plain');
    const stageMedian = (k: string) => summarize(st.map((s) => s.stages[k]).filter((x): x is number => typeof x === 'number')).median;
    (results.load as unknown[]).push({
      model: m.preset, topology: m.topology, file_bytes: m.fileBytes, repeats: reps, self_check: true,
      steerable_s: summ(summarize(st.map((s) => s.total_s))), plain_s: summ(summarize(pl.map((s) => s.total_s))),
      // paired: repeat r's steerable load over repeat r's plain load (each a fresh process, order alternating)
      ratio: summ(summarize(st.map((s, i) => s.total_s / pl[i]!.total_s))),
      ort_create_s: { steerable: summ(summarize(st.map((s) => s.ort_create_s))), plain: summ(summarize(pl.map((s) => s.ort_create_s))) },
      peak_rss_mb: { steerable: summarize(st.map((s) => s.peak_rss_mb)).median, plain: summarize(pl.map((s) => s.peak_rss_mb)).median },
      stage_starts_s: Object.fromEntries(['patch', 'session', 'self-check', 'ready'].map((k) => [k, round(stageMedian(k))])),
    });
  });
}

/** A GGUF export of a model folder under bench/out/gguf, rewritten when the model is newer. */
async function ggufOf(dir: string, name: string, type: GgufExportType, dtype: 'fp32' | 'q4' | 'q4f16'): Promise<string> {
  const outDir = join(OUT_DIR, 'gguf');
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `${name}-${type}.gguf`);
  if (existsSync(file) && statSync(file).mtimeMs > statSync(join(dir, 'config.json')).mtimeMs) return file;
  log(`  exporting ${name} as GGUF ${type} ...`);
  const { parts } = await exportGgufFromSource(dir, { type, dtype });
  await writeFileAtomic(file, parts);
  return file;
}

async function peerSection(): Promise<void> {
  const organism = join(BENCH_DIR, '..', 'models', 'organism');
  const smol = models.find((m) => m.preset === 'smollm2-135m' && m.topology === 'plain') ?? (await ensureModel('smollm2-135m', 'plain', log));
  const cases: { name: string; dir: string; dtype: 'fp32' | 'q4' | 'q4f16'; ggufs: GgufExportType[]; promptTokens: number; newTokens: number }[] = [
    { name: 'organism', dir: organism, dtype: 'fp32', ggufs: ['f32'], promptTokens: 32, newTokens: quick ? 64 : 128 },
    { name: 'smollm2-135m fp32', dir: smol.dir, dtype: 'fp32', ggufs: ['f32'], promptTokens: 32, newTokens: quick ? 12 : 64 },
  ];
  const q4f16 = await ensureModel('smollm2-135m', 'fused-q4f16', log);
  cases.push({ name: 'smollm2-135m q4', dir: q4f16.dir, dtype: 'q4f16', ggufs: ['q4_0', 'q8_0'], promptTokens: 32, newTokens: quick ? 12 : 64 });
  // The same 4-bit codes in the CPU form (fp32 activations, int8 compute, like llama.cpp's Q4_0 x Q8_0 dot products).
  const q4 = await ensureModel('smollm2-135m', 'fused-q4', log);
  cases.push({ name: 'smollm2-135m q4 cpu', dir: q4.dir, dtype: 'q4', ggufs: ['q4_0', 'q8_0'], promptTokens: 32, newTokens: quick ? 12 : 64 });
  for (const c of cases) {
    const r = await step(`peer (llama.cpp vs Steerlab, same weights) ${c.name}`, 240, async () => {
      const ggufs = [];
      for (const t of c.ggufs) ggufs.push({ label: t, file: await ggufOf(c.dir, c.name.replace(/ /g, '-'), t, c.dtype) });
      return runChild<Record<string, any>>('./peer-child.ts', { dir: c.dir, dtype: c.dtype, ggufs, threads: [1, 2], promptTokens: c.promptTokens, newTokens: c.newTokens, reps: quick ? 2 : 5 }, { timeoutMs: 15 * 60_000, log });
    });
    if (!r) continue;
    const variants = (r.variants as Record<string, any>[]).map((v) => ({ variant: v.variant, tok_s: summ(v.tok_s), cpu_ms_per_token: summ(v.cpu_ms_per_token), steerlab_ratio: summ(v.steerlab_ratio), floor_ratio: summ(v.floor_ratio) }));
    // the goal compares with unsteered llama.cpp at its best thread count and API (highest median rate)
    const peers = variants.filter((v) => v.variant.startsWith('llama.cpp') && !v.variant.includes('+cvec'));
    // and with node-llama-cpp's own generation loop only (the harness the issue named; slower per token than a plain
    // C API loop on a model as small as the organism)
    const nodeLoop = peers.filter((v) => !v.variant.includes(' capi '));
    const bestNode = nodeLoop.reduce((a, b) => (b.tok_s.median > a.tok_s.median ? b : a));
    const best = peers.reduce((a, b) => (b.tok_s.median > a.tok_s.median ? b : a));
    (results.peer as unknown[]).push({ model: c.name, steerlab: 'decode engine, batch 1, WAS-like steering matrix', llama_cpp: 'node-llama-cpp 3.21.1 prebuilt (its API, and its C API for capi / +cvec), unsteered except +cvec', prompt_tokens: r.prompt_tokens, new_tokens: r.new_tokens, repeats: r.repeats, variants, best_peer: best.variant, ratio_vs_best_peer: best.steerlab_ratio, floor_vs_best_peer: best.floor_ratio, best_node_llama_cpp: bestNode.variant, ratio_vs_node_llama_cpp: bestNode.steerlab_ratio });
  }
}

async function evalBatchSection(): Promise<void> {
  const m = models.find((x) => x.preset === 'smollm2-135m' && x.topology === 'plain') ?? (await ensureModel('smollm2-135m', 'plain', log));
  const node = await step(`eval_batch (eval runner, node) ${label(m)}`, quick ? 240 : 420, () =>
    runChild<Record<string, any>>('./eval-batch-child.ts', { dir: m.dir, prompts: quick ? 8 : 16, maxNewTokens: P.evalTokens, batches: quick ? [1, 4, 8, 16] : [1, 2, 4, 8, 16], reps: quick ? 1 : 3 }, { timeoutMs: 20 * 60_000, log }),
  );
  // The same prompts, token budget and batch sizes as the Node run (B=2 left out for time), so that the two runtimes'
  // speed-ups compare.
  const browser = await step(`eval_batch (eval runner, headless Chromium WASM) ${label(m)}`, quick ? 240 : 600, () =>
    runChild<Record<string, any>>('./browser-eval-batch-child.ts', { dir: m.dir, prompts: quick ? 8 : 16, maxNewTokens: P.evalTokens, batches: [1, 4, 8, 16], reps: quick ? 1 : 3 }, { timeoutMs: 20 * 60_000, log }),
  );
  // Real prompt lengths: ToxicChat's first 64 test prompts (median 47 tokens, longest 723), where padding to a batch's
  // longest prompt is what batching costs. Full mode only (batch 1 takes ~3 min).
  const toxic = quick ? null : await step(`eval_batch (eval runner, node, ToxicChat prompts) ${label(m)}`, 600, () =>
    runChild<Record<string, any>>('./eval-batch-child.ts', { dir: m.dir, source: 'toxicchat-test', prompts: 64, maxNewTokens: P.evalTokens, batches: [1, 16], reps: 2 }, { timeoutMs: 30 * 60_000, log }),
  );
  // the lab's path on the same prompts: WASM at the lab's batch there (8) and at 16, one repeat (batch 1 takes ~6 min)
  const toxicBrowser = quick ? null : await step(`eval_batch (eval runner, headless Chromium WASM, ToxicChat prompts) ${label(m)}`, 720, () =>
    runChild<Record<string, any>>('./browser-eval-batch-child.ts', { dir: m.dir, source: 'toxicchat-test', prompts: 64, maxNewTokens: P.evalTokens, batches: [1, 8, 16], reps: 1 }, { timeoutMs: 30 * 60_000, log }),
  );
  for (const r of [node, browser, toxic, toxicBrowser]) {
    if (!r) continue;
    if (r.error) {
      skipped.push(`eval_batch ${label(m)}: ${r.error as string}`);
      continue;
    }
    const rows = (r.rows as Record<string, any>[]).map((x) => ({
      batch: x.batch, prompts_per_min: summ(x.prompts_per_min), tokens_per_s: summ(x.tokens_per_s), speedup: summ(x.speedup), replies_equal: x.replies_equal,
      decode_s: summ(x.decode_s), measure_s: summ(x.measure_s), other_s: summ(x.other_s), decode_speedup: summ(x.decode_speedup),
    }));
    const best = rows.reduce((a, b) => (b.speedup.median > a.speedup.median ? b : a));
    (results.eval_batch as unknown[]).push({ model: m.preset, topology: m.topology, runtime: r.runtime, ...(r.prompt_source ? { prompt_source: r.prompt_source } : {}), conditions: r.conditions, prompts: r.prompts, prompt_tokens: r.prompt_tokens, max_new_tokens: r.max_new_tokens, repeats: r.repeats, rows, best_batch: best.batch, best_speedup: best.speedup });
  }
  (results.notes as string[]).push(
    'eval_batch: the eval runner (runEval, as `lab eval` and the lab run it) with two conditions per prompt (base, manual: a fixed direction, no controller), the run\'s own reply_nll calibration (the default: every prompt\'s base reply, decoded first and written as its record); prompts_per_min counts prompts with both their records. A batch is B rows to decode (the calibration\'s base rows, then the manual rows), and the manual rows start from the prompt prefix caches the calibration kept, and the Chromium run takes the Node run\'s prompts and token budget. replies_equal: that batch size wrote the replies of batch 1. decode_s / measure_s / other_s split each run: the batched decode, the batch-1 coherence passes (reply scoring and first-token KL, one record at a time so that no number depends on the batch), and the rest; decode_speedup is the decode\'s own speed-up over batch 1.',
  );
}

// Cheap sections first, so that if the shared machine is slow the time budget cuts the long tail (the big model's
// capture variants), not whole sections.
if (only.has('patch')) await patchSection();
if (only.has('controller')) await controllerSection();
if (only.has('eval')) await evalSection();
if (only.has('compare')) await compareSection();
if (only.has('browser')) await browserSection();
if (only.has('decode') || only.has('prefill')) await decodeSection();
if (only.has('prefill')) await prefillSection();
if (only.has('capture')) await captureSection();
if (only.has('load')) await loadSection();
if (only.has('eval_batch')) await evalBatchSection();
if (only.has('peer')) await peerSection();
if (only.has('projection')) await projectionSection();
writeResults();
log(quick || only.size < SECTIONS.length ? `done (partial run): bench/out/results-${quick ? 'quick' : 'partial'}.{json,md}` : `done: ${join(BENCH_DIR, 'results.json')}, ${join(BENCH_DIR, 'RESULTS.md')}`);
