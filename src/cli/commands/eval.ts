/**
 * `lab eval`: refusal evaluation of named conditions (base, was, uniform, actadd, cast) on datasets, each prompt
 * through the method's flow, judged by keywords, appended to DIR/records.jsonl as it goes. A rerun with the same
 * settings resumes (DIR/run.json holds the settings; different settings in the same DIR are refused). Summary with
 * Wilson 95 % intervals per dataset and condition (over-refusal on benign sets) in DIR/summary.{json,csv,md}.
 * Prompts longer than the model's context are shortened first (--fit, default middle: src/core/method/fit.ts); each
 * record says whether (truncated) and from how many prompt tokens (prompt_tokens).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import type { Command } from 'commander';
import { selectBackend } from '../../core/controller/backend.js';
import type { Label } from '../../core/data/types.js';
import { getJudge, JUDGE_IDS } from '../../core/eval/judges.js';
import { describeOpenReport, openRunStore, writeFileAtomic, type EvalRecord } from '../../core/eval/records.js';
import { checkResume, modelFingerprint, promptHash, type PlannedPrompt } from '../../core/eval/resume-check.js';
import {
  PAPER_SAMPLING,
  runEval,
  runSummaryCsv,
  runSummaryJson,
  runSummaryMarkdown,
  summarizeRun,
  type EvalDataset,
  type RunSummary,
} from '../../core/eval/runner.js';
import { loadControllerFor, loadDirectionFor } from '../../core/method/artifacts.js';
import { parseConditionList, resolveConditions, type CastSettings } from '../../core/method/conditions.js';
import { datasetNamesFor, loadPromptSet, pick } from '../../core/method/datasets.js';
import { FIT_MODES, parseFitMode } from '../../core/method/fit.js';
import type { MethodController } from '../../core/method/flow.js';
import { loadMethodModel } from '../../core/method/model.js';
import type { Device, Dtype } from '../../core/model/types.js';
import type { DirectionFile } from '../../core/steering/direction-file.js';
import { parseDevice } from '../../core/model/node-cli.js';
import { decodeUtf8 } from '../../core/util/utf8.js';
import { modelFolderInputs, refuseOverwritingInputs } from '../../core/util/same-file-node.js';
import { ProgressBar } from '../progress.js';
import { parseStrength, parseTokenLimit } from '../numbers.js';
import { parseCount, parseSeed, readCastSettings } from '../policy-options.js';
import { addModelOptions } from '../model-options.js';

export interface EvalCliOptions {
  model: string;
  dtype?: Dtype;
  device?: Device;
  modelFileName?: string;
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
  maxNewTokens: string;
  sampling?: boolean;
  steerAllPositions?: boolean;
  /** none | middle | head | tail (default middle): how prompts longer than the context are shortened. */
  fit?: string;
  judge: string;
  allowOtherModel?: boolean;
  /** Let special-token strings in prompts become special tokens (default: they stay text). */
  allowSpecialTokens?: boolean;
  out: string;
  json?: boolean;
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
  warnings: string[];
}

const fileHash = async (p: string) => createHash('sha256').update(await readFile(p)).digest('hex').slice(0, 16);

async function plannedPrompts(datasets: readonly EvalDataset[]): Promise<PlannedPrompt[]> {
  const out: PlannedPrompt[] = [];
  for (const d of datasets) for (const p of d.prompts) out.push({ dataset: d.name, id: p.id, label: p.label, promptHash: await promptHash(p.text) });
  return out;
}

/** One hash of a dataset's prompts (id, label, text): any edit, even of a prompt not evaluated yet, changes it. */
function contentHash(prompts: readonly PlannedPrompt[]): string {
  const h = createHash('sha256');
  for (const p of prompts) h.update(`${p.id}\u0000${p.label}\u0000${p.promptHash}\n`);
  return h.digest('hex').slice(0, 16);
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

export async function runEvalCommand(o: EvalCliOptions, progress = true): Promise<EvalRunResult> {
  if (!o.out) throw new Error('--out DIR is required');
  if (!o.dataset || o.dataset.length === 0) throw new Error('--dataset is required (a dataset name or a CSV/JSONL file; repeatable)');
  parseDevice(o.device);
  const names = parseConditionList(o.conditions);
  const judge = getJudge(o.judge);
  const maxNewTokens = parseTokenLimit('max-new-tokens', o.maxNewTokens);
  const seed = parseSeed(o.seed);
  const fit = parseFitMode(o.fit, '--fit');
  const n = o.n !== undefined ? parseCount('n', o.n) : undefined;
  if (o.label !== undefined && o.label !== 'harmful' && o.label !== 'benign') throw new Error(`--label must be harmful or benign, got "${o.label}"`);
  const alpha = o.alpha !== undefined ? parseStrength('alpha', o.alpha) : undefined;
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

  const t0 = performance.now();
  const model = await loadMethodModel({ model: o.model, dtype: o.dtype, device: o.device, modelFileName: o.modelFileName });
  try {
    let direction: DirectionFile | null = null;
    let directionId: string | null = null;
    if (o.direction) {
      const d = await loadDirectionFor(o.direction, model);
      direction = d.file;
      directionId = d.id;
      warnings.push(...d.warnings);
    }
    let controller: MethodController | null = null;
    if (o.controller) {
      controller = (await loadControllerFor(o.controller, model, { allowOtherModelId: o.allowOtherModel })).method;
      const tied = controller.metadata?.direction_id;
      if (tied && directionId && tied !== directionId) warnings.push(`controller was trained with direction ${tied}, but --direction is ${directionId}`);
      await selectBackend();
    }
    const cast: CastSettings | null = o.cast ? await readCastSettings(o.cast, model, direction) : null;
    const conditions = resolveConditions(names, { direction, controller, cast, ...(alpha !== undefined ? { alpha } : {}) });
    const sampling = o.sampling ? { ...PAPER_SAMPLING } : null;

    const planned = await plannedPrompts(datasets);
    const specialTokens = o.allowSpecialTokens ? 'allowed' : 'text';
    const manifest = {
      model_id: model.id,
      model_fingerprint: await modelFingerprint(model),
      model_file_name: model.modelFileName,
      dtype: model.dtype,
      datasets: datasets.map((d) => ({
        name: d.name,
        n: d.prompts.length,
        ids: createHash('sha256').update(d.prompts.map((p) => p.id).join('\u0000')).digest('hex').slice(0, 16),
        content: contentHash(planned.filter((p) => p.dataset === d.name)),
      })),
      conditions: names,
      seed,
      max_new_tokens: maxNewTokens,
      sampling,
      steer_prompt_positions: o.steerAllPositions ? 'all' : 'last',
      fit,
      judge: judge.id,
      direction_id: directionId,
      controller: o.controller ? await fileHash(o.controller) : null,
      cast: o.cast ? await fileHash(o.cast) : null,
      alpha: alpha ?? null,
      special_tokens: specialTokens,
    };
    const stamp = { model_id: model.id, direction_id: directionId, special_tokens: specialTokens };
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
      const stored = await readManifest(o.out);
      checkResume(o.out, { settings: stored, records: store.records() }, { settings: manifest, prompts: planned, recordStamp: stamp });
      if (!stored) await writeFileAtomic(join(o.out, 'run.json'), `${JSON.stringify(manifest, null, 2)}\n`);
      const bar = progress ? new ProgressBar('eval', 0) : null;
      result = await runEval({
        model,
        datasets,
        conditions,
        direction: direction?.direction ?? null,
        controller,
        store,
        judge,
        maxNewTokens,
        sampling,
        seed,
        steerPromptPositions: o.steerAllPositions ? 'all' : 'last',
        fit,
        allowSpecialTokens: o.allowSpecialTokens === true,
        stamp,
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
    const summary = summarizeRun(records);
    const files = { json: join(o.out, 'summary.json'), csv: join(o.out, 'summary.csv'), markdown: join(o.out, 'summary.md') };
    await writeFileAtomic(files.json, runSummaryJson(summary));
    await writeFileAtomic(files.csv, runSummaryCsv(summary));
    await writeFileAtomic(files.markdown, runSummaryMarkdown(summary));
    const t2 = performance.now();
    return {
      summary,
      records: join(o.out, 'records.jsonl'),
      written: result.written,
      skipped: result.skipped,
      total: result.total,
      files,
      seconds: { load: (t1 - t0) / 1000, run: (t2 - t1) / 1000, total: (t2 - t0) / 1000 },
      warnings,
    };
  } finally {
    await model.dispose();
  }
}

const nanToNull = (x: number) => (Number.isNaN(x) ? null : x);

/** The --json contract: exactly these keys. */
export function evalJson(r: EvalRunResult): { summary: EvalJsonRow[]; records: string } {
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

function collect(value: string, previous: string[] = []): string[] {
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
    .option('--conditions <list>', 'comma-separated: base, was, uniform, actadd, cast', 'base,was')
    .option('--direction <file>', 'direction file (was, uniform, actadd, cast)')
    .option('--controller <file>', 'controller file (was, uniform)')
    .option('--cast <file>', 'CAST settings JSON (cast)')
    .option('--alpha <x>', "patch strength for was/uniform (default: the controller's alpha)")
    .option('--max-new-tokens <t>', 'tokens per reply (paper: 256)', '64')
    .option('--sampling', 'the paper\'s sampling: temperature 0.7, top-p 0.9 (default greedy)')
    .option('--steer-all-positions', 'steer every prompt position too (default: last prompt token and new tokens)')
    .option('--fit <mode>', `prompts longer than the model's context: ${FIT_MODES.join(' | ')} (middle keeps head and tail around " [...] "; none: a longer prompt fails the run)`, 'middle')
    .option('--judge <id>', `refusal judge: ${JUDGE_IDS.join(' | ')}`, 'was-keywords')
    .option('--allow-other-model', 'accept a controller trained on another model id of the same shape')
    .option('--allow-special-tokens', 'let special-token strings in prompts (e.g. <|im_end|>) become role/control tokens; default: they are text (records say which)')
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

