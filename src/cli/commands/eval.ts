/**
 * `lab eval`: refusal evaluation of named conditions (base, was, uniform, manual, actadd, cast) on datasets, through
 * the core eval runner (src/core/eval/runner.ts, the same the lab runs), judged by keywords, appended to
 * DIR/records.jsonl as it goes. A rerun with the same settings resumes (DIR/run.json holds the settings; different
 * settings in the same DIR are refused), also in a folder exported by the lab. Summary with Wilson 95 % intervals per
 * dataset and condition (over-refusal on benign sets) in DIR/summary.{json,csv,md}. Prompts longer than the model's
 * context are shortened first (--fit, default middle: src/core/method/fit.ts); each record says whether (truncated)
 * and from how many prompt tokens (prompt_tokens). --batch N decodes N records (prompt x condition) per forward pass
 * (default DEFAULT_EVAL_BATCH); the records do not depend on it, nor on --prefix-memory (how much memory holds the
 * calibration's prompt prefixes for the steered records: src/core/eval/prefix-carry.ts).
 *
 * `lab summarize DIR`: the summary files of a run folder from its records.jsonl (CLI or lab export), without a model.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { selectBackend } from '../../core/controller/backend.js';
import type { Label } from '../../core/data/types.js';
import { getJudge, JUDGE_IDS } from '../../core/eval/judges.js';
import type { EvalRecord } from '../../core/eval/records.js';
import { describeOpenReport, openRunStore } from '../../core/eval/records-node.js';
import { checkResume, modelFingerprint, type PlannedPrompt } from '../../core/eval/resume-check.js';
import { DEFAULT_EVAL_BATCH } from '../../core/eval/batch.js';
import { DEFAULT_PREFIX_CARRY_BYTES } from '../../core/eval/prefix-carry.js';
import { PAPER_SAMPLING, promptHash, runEval, runSettings, RUN_DISPLAY_FIELDS, type EvalDataset } from '../../core/eval/runner.js';
import { parseRecordsJsonl, runSettingsJson, runSummaryMarkdown, summarizeRun, summaryFiles, type RunSummary } from '../../core/eval/summary.js';
import { loadMethodArtefacts } from '../../core/method/artifacts-node.js';
import { castId, conditionsAlpha, parseConditionList, resolveConditions, type CastSettings } from '../../core/method/conditions.js';
import { datasetNamesFor, loadPromptSet, pick } from '../../core/method/datasets.js';
import { FIT_MODES, parseFitMode } from '../../core/method/fit.js';
import type { MethodController } from '../../core/method/flow.js';
import type { DirectionFile } from '../../core/steering/direction-file.js';
import { parseDevice } from '../../core/model/node-cli.js';
import { writeFileAtomic } from '../../core/util/atomic-write.js';
import { modelFolderInputs, refuseOverwritingInputs } from '../../core/util/same-file-node.js';
import { decodeUtf8 } from '../../core/util/utf8.js';
import { parseInteger, parseStrength, parseTokenLimit } from '../numbers.js';
import { ProgressBar } from '../progress.js';
import { checkSteeringFlags, parseCount, parseManualSettings, parseSeed, readCastSettings, resolveSteeringSettings } from '../policy-options.js';
import { checkCalibration, DEFAULT_CALIBRATION_SET, defaultCalibrationPlan, type CalibrationPlan } from '../../core/eval/coherence-run.js';
import { DEFAULT_NLL_QUANTILE } from '../../core/eval/coherence.js';
import type { SteeringSettings } from '../../core/steering/modes.js';
import { addModelOptions, loadCommandModel, type ModelCliOptions } from '../model-options.js';

const MIB = 2 ** 20;

export interface EvalCliOptions extends ModelCliOptions {
  dataset: string[];
  textColumn?: string;
  label?: string;
  idColumn?: string;
  n?: string;
  seed: string;
  conditions: string;
  direction?: string;
  controller?: string;
  cast?: string;
  alpha?: string;
  /** manual condition: global scale, layer weights (one value or one per layer), switched-on layers. */
  scale?: string;
  layerWeights?: string;
  enabledLayers?: string;
  maxNewTokens: string;
  sampling?: boolean;
  steerAllPositions?: boolean;
  /** none | middle | head | tail (default middle): how prompts longer than the context are shortened. */
  fit?: string;
  judge: string;
  /** Records decoded together (prompts x conditions per forward pass); default DEFAULT_EVAL_BATCH. */
  batch?: string;
  /** MiB for the calibration's prompt prefix caches carried to the steered records; default 256, 0 = none. */
  prefixMemory?: string;
  allowOtherModel?: boolean;
  /** Let special-token strings in prompts become special tokens (default: they stay text). */
  allowSpecialTokens?: boolean;
  out: string;
  json?: boolean;
  /** Steering settings of the steered conditions (policy-options.ts). */
  mode?: string;
  layerRange?: string;
  alphaScale?: string;
  normSet?: string;
  normN?: string;
  /** reply_nll calibration: a named prompt set (default: the run's benign prompts), how many, which quantile. */
  calibrationSet?: string;
  calibrationN?: string;
  calibrationQuantile?: string;
}

export interface EvalJsonRow {
  dataset: string;
  condition: string;
  n: number;
  refusals: number;
  refusal_rate: number | null;
  ci_low: number | null;
  ci_high: number | null;
}

export interface EvalRunResult {
  summary: RunSummary;
  records: string;
  written: number;
  skipped: number;
  total: number;
  files: { json: string; csv: string; markdown: string };
  seconds: { load: number; run: number; total: number };
  /** Records written with `error` (prompts the model could not take). */
  failed: number;
  warnings: string[];
}

/**
 * run.json's `alpha` once recorded only an explicit --alpha (null when the conditions used the controller's own), while
 * the lab recorded the alpha in effect. Both now record the alpha in effect; a stored null from before is read as the
 * default alpha it stood for, when this command gives no --alpha either (its records carry the alpha they were made
 * with, and the controller id is checked, so the default is the same one).
 */
function olderAlpha(stored: Record<string, unknown> | null, effective: number | null, given: number | undefined): Record<string, unknown> | null {
  if (!stored || stored['alpha'] !== null || effective === null || given !== undefined) return stored;
  return { ...stored, alpha: effective };
}

/** The run's manifest (DIR/run.json), or null when DIR has none yet. */
async function readManifest(dir: string): Promise<Record<string, unknown> | null> {
  const file = join(dir, 'run.json');
  try {
    return JSON.parse(decodeUtf8(await readFile(file), file)) as Record<string, unknown>;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`${file} is not readable JSON (${(e as Error).message}); restore it, or give another --out`);
  }
}

async function plannedPrompts(datasets: readonly EvalDataset[]): Promise<PlannedPrompt[]> {
  const out: PlannedPrompt[] = [];
  for (const d of datasets) for (const p of d.prompts) out.push({ dataset: d.name, id: p.id, label: p.label ?? null, promptHash: await promptHash(p.text) });
  return out;
}

export async function runEvalCommand(o: EvalCliOptions, progress = true): Promise<EvalRunResult> {
  if (!o.out) throw new Error('--out DIR is required');
  if (!o.dataset || o.dataset.length === 0) throw new Error('--dataset is required (a dataset name or a CSV/JSONL file; repeatable)');
  parseDevice(o.device);
  const names = parseConditionList(o.conditions);
  const judge = getJudge(o.judge);
  const maxNewTokens = parseTokenLimit('max-new-tokens', o.maxNewTokens);
  const seed = parseSeed(o.seed);
  const fit = parseFitMode(o.fit, '--fit');
  const batch = o.batch === undefined ? DEFAULT_EVAL_BATCH : parseCount('batch', o.batch);
  const prefixCarryBytes = (o.prefixMemory === undefined ? DEFAULT_PREFIX_CARRY_BYTES / MIB : parseInteger('prefix-memory', o.prefixMemory, 0, 1 << 20)) * MIB;
  const n = o.n !== undefined ? parseCount('n', o.n) : undefined;
  if (o.label !== undefined && o.label !== 'harmful' && o.label !== 'benign') throw new Error(`--label must be harmful or benign, got "${o.label}"`);
  const alpha = o.alpha !== undefined ? parseStrength('alpha', o.alpha) : undefined;
  const positions = o.steerAllPositions ? 'all' : 'last';
  const explicitSettings = o.mode !== undefined || o.layerRange !== undefined || o.alphaScale !== undefined;
  if (explicitSettings) checkSteeringFlags(o, positions);
  const quantile = o.calibrationQuantile !== undefined ? parseQuantile(o.calibrationQuantile) : DEFAULT_NLL_QUANTILE;
  if (o.calibrationN !== undefined && o.calibrationSet === undefined) throw new Error('--calibration-n applies to --calibration-set: name the set too');
  if ((names.includes('was') || names.includes('uniform')) && !o.controller) {
    throw new Error(`condition '${names.includes('was') ? 'was' : 'uniform'}' needs --controller FILE (train one with lab train-controller)`);
  }

  const written = ['records.jsonl', 'records.jsonl.torn', 'records.jsonl.duplicates', 'run.json', 'summary.json', 'summary.csv', 'summary.md'];
  refuseOverwritingInputs(
    written.map((f) => ({ path: join(o.out, f), role: `--out ${o.out}: its` })),
    [
      ...o.dataset.map((d) => ({ path: d, role: '--dataset' })),
      ...[o.direction, o.controller, o.cast].flatMap((p, i) => (p ? [{ path: p, role: ['--direction', '--controller', '--cast'][i]! }] : [])),
      ...modelFolderInputs(o.model),
    ],
  );

  // Datasets before the model: a bad name or file fails fast.
  const datasets: EvalDataset[] = [];
  const warnings: string[] = [];
  const setNames = datasetNamesFor(o.dataset);
  for (const [i, source] of o.dataset.entries()) {
    const set = await loadPromptSet({ source, name: setNames[i]!, ...(o.textColumn ? { textColumn: o.textColumn } : {}), ...(o.label ? { label: o.label as Label } : {}), ...(o.idColumn ? { idColumn: o.idColumn } : {}) });
    if (set.problems.length > 0) {
      // Malformed rows are never dropped silently: the user hears the count and where they are.
      const shown = set.problems.slice(0, 10).map((p) => `line ${p.line}: ${p.message}`).join('; ');
      const more = set.problems.length > 10 ? `; and ${set.problems.length - 10} more` : '';
      warnings.push(`${source}: skipped ${set.problems.length} malformed rows of ${set.rowsRead} (${shown}${more})`);
    }
    datasets.push({ name: set.name, prompts: pick(set.prompts, n, seed) });
  }

  const calibrationPlan = o.calibrationSet !== undefined ? await namedCalibrationPlan(o.calibrationSet, o.calibrationN, quantile, o.textColumn) : undefined;

  const t0 = performance.now();
  const model = await loadCommandModel(o);
  try {
    const art = await loadMethodArtefacts(o, model, { allowOtherModel: o.allowOtherModel === true });
    warnings.push(...art.warnings);
    const direction: DirectionFile | null = art.direction?.file ?? null;
    const directionId = art.direction?.id ?? null;
    const controller: MethodController | null = art.controller?.method ?? null;
    const controllerId = art.controller?.id ?? null;
    if (controller) await selectBackend();
    const cast: CastSettings | null = o.cast ? await readCastSettings(o.cast, model, direction) : null;
    const manual = parseManualSettings(o, model.numLayers);
    if (manual && !names.includes('manual')) throw new Error('--scale / --layer-weights / --enabled-layers set the manual condition, which --conditions does not list');
    const conditions = resolveConditions(names, { direction, controller, cast, manual, ...(alpha !== undefined ? { alpha } : {}) });
    const sampling = o.sampling ? { ...PAPER_SAMPLING } : null;
    const steerPromptPositions = positions;
    let steering: SteeringSettings | undefined;
    if (explicitSettings) {
      for (const c of conditions.filter((c) => c.policy.kind !== 'off')) steering = await resolveSteeringSettings(o, positions, model, c.policy.kind);
      steering ??= await resolveSteeringSettings(o, positions, model, 'was');
    }

    const specialTokens = o.allowSpecialTokens ? ('allowed' as const) : ('text' as const);
    const planned = await plannedPrompts(datasets);
    const settings = await runSettings({
      model: model.identity,
      datasets,
      conditions: names,
      seed,
      maxNewTokens,
      sampling,
      steerPromptPositions,
      fit,
      judge: judge.id,
      directionId,
      controllerId,
      castId: cast ? await castId(cast) : null,
      alpha: conditionsAlpha(conditions),
      manual: names.includes('manual') ? manual : null,
      specialTokens,
      // What the model computes: a resume cannot mix other weights under the same name (resume-check.ts).
      fingerprint: await modelFingerprint(model),
      steering: steering ?? null,
      coherence: { calibrationSet: calibrationPlan ? `${calibrationPlan.set} (n ${calibrationPlan.prompts.length})` : DEFAULT_CALIBRATION_SET, quantile },
    });
    const manifest = settings;
    const stamp = { model_id: model.id, direction_id: directionId, controller_id: controllerId, special_tokens: specialTokens };
    const store = await openRunStore(o.out);
    warnings.push(...describeOpenReport(store.report));
    const t1 = performance.now();
    let interrupted = false;
    const ac = new AbortController();
    const onSigint = () => {
      interrupted = true;
      ac.abort();
    };
    process.once('SIGINT', onSigint);
    let result;
    let records: EvalRecord[] = [];
    try {
      const stored = olderAlpha(await readManifest(o.out), conditionsAlpha(conditions), alpha);
      checkResume(o.out, { settings: stored, records: store.records() }, { settings: manifest, prompts: planned, recordStamp: stamp, displayOnly: RUN_DISPLAY_FIELDS });
      if (!stored) await writeFileAtomic(join(o.out, 'run.json'), runSettingsJson(manifest));
      // A resumed run judges with the calibration it made first (run.json), never a new one.
      const storedCalibration = stored?.['coherence_calibration'] !== undefined ? checkCalibration(stored['coherence_calibration'], join(o.out, 'run.json')) : null;
      const bar = progress ? new ProgressBar('eval', 0) : null;
      result = await runEval({
        model,
        datasets,
        conditions,
        direction: direction?.direction ?? null,
        controller,
        directionId,
        controllerId,
        store,
        judge,
        maxNewTokens,
        sampling,
        seed,
        steerPromptPositions,
        ...(steering ? { settings: steering } : {}),
        calibration: storedCalibration,
        ...(calibrationPlan ? { calibrationPlan } : quantile !== DEFAULT_NLL_QUANTILE ? { calibrationPlan: defaultCalibrationPlan(datasets, quantile) } : {}),
        onCalibration: (c) => writeFileAtomic(join(o.out, 'run.json'), runSettingsJson({ ...manifest, coherence_calibration: c })),
        fit,
        allowSpecialTokens: o.allowSpecialTokens === true,
        batch,
        prefixCarryBytes,
        signal: ac.signal,
        onProgress: (p) => bar?.update(p.done, p.total, p.record ? `${p.record.dataset}/${p.record.condition}` : ''),
      });
      // The store holds only this run's datasets and conditions: run.json refuses other settings in the same folder.
      records = [...store.records()];
    } finally {
      process.removeListener('SIGINT', onSigint);
      await store.close();
    }
    if (interrupted) throw new Error(`interrupted after ${result.written} new records; rerun the same command to resume`);
    const { summary, files } = await writeSummaries(o.out, records);
    const t2 = performance.now();
    if (result.failed > 0) warnings.push(`${result.failed} records could not be run and are unjudged (their "error" field says why)`);
    return {
      summary,
      records: join(o.out, 'records.jsonl'),
      written: result.written,
      skipped: result.skipped,
      total: result.total,
      files,
      seconds: { load: (t1 - t0) / 1000, run: (t2 - t1) / 1000, total: (t2 - t0) / 1000 },
      failed: result.failed,
      warnings,
    };
  } finally {
    await model.dispose();
  }
}

/** summary.json / .csv / .md of a run folder from its records (the same texts the lab exports). */
async function writeSummaries(dir: string, records: readonly EvalRecord[]): Promise<{ summary: RunSummary; files: { json: string; csv: string; markdown: string } }> {
  const texts = summaryFiles(records);
  const files = { json: join(dir, 'summary.json'), csv: join(dir, 'summary.csv'), markdown: join(dir, 'summary.md') };
  await writeFileAtomic(files.json, texts['summary.json']);
  await writeFileAtomic(files.csv, texts['summary.csv']);
  await writeFileAtomic(files.markdown, texts['summary.md']);
  return { summary: summarizeRun(records), files };
}

/** `lab summarize DIR`: reads DIR/records.jsonl (a CLI run or a lab export) and (re)writes DIR/summary.*. */
export async function runSummarizeCommand(dir: string): Promise<{ summary: RunSummary; records: number; files: { json: string; csv: string; markdown: string } }> {
  const file = join(dir, 'records.jsonl');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as Error).message} (expected a run folder made by lab eval or exported by the lab)`);
  }
  const records = parseRecordsJsonl(text, file);
  const { summary, files } = await writeSummaries(dir, records);
  return { summary, records: records.length, files };
}

/**
 * --calibration-set NAME|FILE [--calibration-n N]: a seeded sample (seed 0) of a prompt set as the calibration prompts.
 * A user file is read with the command's --text-column, like its datasets.
 */
export async function namedCalibrationPlan(source: string, n: string | undefined, quantile: number, textColumn?: string): Promise<CalibrationPlan> {
  // only the prompt texts are used (their unsteered replies set T), so a user file's rows need no label of their own
  const set = await loadPromptSet({ source, ...(textColumn ? { textColumn } : {}), label: 'benign' });
  const cn = n !== undefined ? parseCount('calibration-n', n) : undefined;
  return { set: set.name, prompts: pick(set.prompts, cn, 0).map((p) => ({ dataset: set.name, prompt: p })), quantile };
}

/** --calibration-quantile: a number in (0, 1]. */
export function parseQuantile(v: string): number {
  const q = Number(v);
  if (v.trim() === '' || !(q > 0 && q <= 1)) throw new Error(`--calibration-quantile must be a number in (0, 1], got "${v}"`);
  return q;
}

const nanToNull = (x: number) => (Number.isNaN(x) ? null : x);

/** The --json contract: exactly these keys. */
export function evalJson(r: Pick<EvalRunResult, 'summary' | 'records'>): { summary: EvalJsonRow[]; records: string } {
  return {
    summary: r.summary.rows.map((s) => ({
      dataset: s.dataset,
      condition: s.condition,
      n: s.n,
      refusals: s.refusals,
      refusal_rate: nanToNull(s.refusal_rate),
      ci_low: nanToNull(s.ci_low),
      ci_high: nanToNull(s.ci_high),
    })),
    records: r.records,
  };
}

/** Commander: a repeatable option's values. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function register(program: Command): void {
  addModelOptions(program.command('eval').description('refusal evaluation of steering conditions on datasets (resumable; Wilson 95 % intervals)'))
    .requiredOption('--dataset <name|file>', 'dataset name or CSV/JSONL file (repeatable)', collect)
    .option('--text-column <col>', 'user files: the column holding the prompt text')
    .option('--label <label>', 'user files: harmful | benign (the label of every row)')
    .option('--id-column <col>', 'user files: a column with stable ids')
    .option('--n <n>', 'prompts per dataset (seeded sample; default all)')
    .option('--seed <s>', 'sampling seed (prompt choice and generation)', '0')
    .option('--conditions <list>', 'comma-separated: base, was, uniform, manual, actadd, cast', 'base,was')
    .option('--direction <file>', 'direction file (was, uniform, actadd, cast)')
    .option('--controller <file>', 'controller file (was, uniform)')
    .option('--cast <file>', 'CAST settings JSON (cast)')
    .option('--alpha <x>', "patch strength for was/uniform/manual (default: the controller's alpha, else 2)")
    .option('--scale <s>', 'manual condition: global scale s')
    .option('--layer-weights <list>', 'manual condition: layer weights, comma-separated, or one value for every layer (default 1)')
    .option('--enabled-layers <list>', 'manual condition: steer only these layers (comma-separated indices)')
    .option('--max-new-tokens <t>', 'tokens per reply (paper: 256)', '64')
    .option('--sampling', 'the paper\'s sampling: temperature 0.7, top-p 0.9 (default greedy)')
    .option('--steer-all-positions', 'steer every prompt position too (default: last prompt token and new tokens)')
    .option('--fit <mode>', `prompts longer than the model's context: ${FIT_MODES.join(' | ')} (middle keeps head and tail around " [...] "; none: a longer prompt fails the run)`, 'middle')
    .option('--judge <id>', `refusal judge: ${JUDGE_IDS.join(' | ')}`, 'was-keywords')
    .option('--batch <n>', `rows decoded together (records to decode; base records the calibration made take none), one forward pass per token for all; four batches' rows are taken at a time and decoded shortest prompt first; the records do not depend on it (default ${DEFAULT_EVAL_BATCH})`)
    .option('--prefix-memory <MiB>', `memory for the calibration's prompt prefix caches, so that the steered records skip their prefill (default ${DEFAULT_PREFIX_CARRY_BYTES / MIB}; 0 = none); speed only`)
    .option('--allow-other-model', 'accept a direction or controller made for another model of the same shape (it then warns)')
    .option('--allow-special-tokens', 'let special-token strings in prompts (e.g. <|im_end|>) become role/control tokens; default: they are text (records say which)')
    .option('--mode <mode>', 'steered conditions: add | clamp | ablate (default add; see lab generate --help)')
    .option('--layer-range <a-b>', 'steered conditions: steer only decoder layers a..b (inclusive, 0-based)')
    .option('--alpha-scale <scale>', 'absolute (default) | relative (alpha x each layer\'s mean residual norm over --norm-set)')
    .option('--norm-set <dataset>', 'relative alpha: calibration prompts for the residual norms (default harmless-train)')
    .option('--norm-n <n>', 'relative alpha: how many calibration prompts (default 32)')
    .option('--calibration-set <name|file>', `reply_nll threshold: calibrate on the base replies to this prompt set (default: ${DEFAULT_CALIBRATION_SET})`)
    .option('--calibration-n <n>', 'prompts of --calibration-set (seeded sample, seed 0; default all)')
    .option('--calibration-quantile <q>', `reply_nll threshold = this quantile of the calibration replies' reply_nll (default ${DEFAULT_NLL_QUANTILE})`)
    .requiredOption('--out <dir>', 'run folder (records.jsonl, run.json, summary.*)')
    .option('--json', 'print {"summary": [...], "records": PATH}')
    .action(async (opts: EvalCliOptions) => {
      const r = await runEvalCommand(opts);
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(evalJson(r))}\n`);
        return;
      }
      process.stdout.write(
        `${runSummaryMarkdown(r.summary)}\n${r.written} new records, ${r.skipped} already done (resumed); records ${r.records}\n` +
          `summary ${r.files.json}, ${r.files.csv}, ${r.files.markdown}; ${r.seconds.load.toFixed(2)} s load, ${r.seconds.run.toFixed(2)} s run\n`,
      );
    });
}


export function registerSummarize(program: Command): void {
  program
    .command('summarize')
    .description('write summary.json, summary.csv and summary.md of a run folder from its records.jsonl (lab eval or a lab export)')
    .argument('<dir>', 'run folder holding records.jsonl')
    .option('--json', 'print {"summary": [...], "records": PATH}')
    .action(async (dir: string, opts: { json?: boolean }) => {
      const r = await runSummarizeCommand(dir);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(evalJson({ summary: r.summary, records: join(dir, 'records.jsonl') }))}\n`);
        return;
      }
      process.stdout.write(`${runSummaryMarkdown(r.summary)}\n${r.records} records; summary ${r.files.json}, ${r.files.csv}, ${r.files.markdown}\n`);
    });
}
