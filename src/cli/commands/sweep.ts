/**
 * `lab sweep`: a grid of steering settings (alphas x modes x layer ranges x positions, per policy) on dev sets, each
 * row through the core eval runner (src/core/eval/sweep-run.ts runSweep, the same the lab can run), then the Pareto
 * frontier and the operating point chosen on dev data by the written rule (src/core/eval/sweep.ts).
 *
 * DIR/sweep-plan.json holds the settings (and, once the base row made it, the reply_nll calibration); a rerun with the
 * same settings resumes (DIR/rows/<row id>/records.jsonl, record by record) and reuses the calibration; different
 * settings in the same DIR are refused. Results: DIR/sweep.json (what the lab's Sweep view reads), sweep.csv, sweep.md.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { selectBackend } from '../../core/controller/backend.js';
import { checkCalibration, DEFAULT_CALIBRATION_SET, defaultCalibrationPlan, type CalibrationPlan } from '../../core/eval/coherence-run.js';
import { DEFAULT_NLL_QUANTILE } from '../../core/eval/coherence.js';
import { getJudge, JUDGE_IDS } from '../../core/eval/judges.js';
import { openRunStore } from '../../core/eval/records-node.js';
import { runSettings, settingsDiff } from '../../core/eval/runner.js';
import { runSweep, sweepFiles, sweepMarkdown, SWEEP_FILES, SWEEP_POLICIES, type SweepDataset, type SweepGrid, type SweepReport, type SweepRole } from '../../core/eval/sweep-run.js';
import { loadMethodArtefacts } from '../../core/method/artifacts-node.js';
import { parseConditionList, resolveConditions } from '../../core/method/conditions.js';
import { datasetNamesFor, loadPromptSet, pick } from '../../core/method/datasets.js';
import { parseFitMode } from '../../core/method/fit.js';
import { parseDevice } from '../../core/model/node-cli.js';
import { STEERING_MODES, STEER_POSITIONS, type SteeringMode, type SteerPositions } from '../../core/steering/modes.js';
import { writeFileAtomic } from '../../core/util/atomic-write.js';
import { decodeUtf8 } from '../../core/util/utf8.js';
import { parseTokenLimit } from '../numbers.js';
import { addModelOptions, loadCommandModel, type ModelCliOptions } from '../model-options.js';
import { parseCount, parseLayerRange, parseManualSettings, parseNumberList, parseSeed } from '../policy-options.js';
import { ProgressBar } from '../progress.js';
import { collect, namedCalibrationPlan, parseQuantile } from './eval.js';

export interface SweepCliOptions extends ModelCliOptions {
  harmful: string[];
  wrapped: string[];
  benign: string[];
  textColumn?: string;
  n?: string;
  seed: string;
  policies: string;
  direction?: string;
  controller?: string;
  scale?: string;
  layerWeights?: string;
  enabledLayers?: string;
  alphas: string;
  modes: string;
  layerRanges: string;
  positions: string;
  maxNewTokens: string;
  fit?: string;
  judge: string;
  samples: string;
  calibrationSet?: string;
  calibrationN?: string;
  calibrationQuantile?: string;
  allowOtherModel?: boolean;
  out: string;
  json?: boolean;
}

function list(flag: string, v: string): string[] {
  const xs = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (xs.length === 0) throw new Error(`--${flag}: expected a comma-separated list`);
  return xs;
}

/** --modes, --positions, --alphas, --layer-ranges ("all" or a-b) into the grid. */
export function parseGrid(o: Pick<SweepCliOptions, 'alphas' | 'modes' | 'layerRanges' | 'positions'>, numLayers: number): SweepGrid {
  const modes = list('modes', o.modes);
  for (const m of modes) if (!(STEERING_MODES as readonly string[]).includes(m)) throw new Error(`--modes: "${m}" is not one of ${STEERING_MODES.join(', ')}`);
  const positions = list('positions', o.positions);
  for (const p of positions) if (!(STEER_POSITIONS as readonly string[]).includes(p)) throw new Error(`--positions: "${p}" is not one of ${STEER_POSITIONS.join(', ')}`);
  return {
    alphas: parseNumberList('alphas', o.alphas),
    modes: modes as SteeringMode[],
    layerRanges: list('layer-ranges', o.layerRanges).map((r) => (r === 'all' ? null : parseLayerRange(r, numLayers))),
    positions: positions as SteerPositions[],
  };
}

async function readPlan(file: string): Promise<Record<string, unknown> | null> {
  try {
    return JSON.parse(decodeUtf8(await readFile(file), file)) as Record<string, unknown>;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`${file} is not readable JSON (${(e as Error).message}); restore it, or give another --out`);
  }
}

export async function runSweepCommand(o: SweepCliOptions, progress = true): Promise<{ report: SweepReport; files: Record<string, string>; warnings: string[] }> {
  if (!o.out) throw new Error('--out DIR is required');
  parseDevice(o.device);
  const names = parseConditionList(o.policies);
  for (const n of names) if (!(SWEEP_POLICIES as readonly string[]).includes(n)) throw new Error(`--policies: '${n}' cannot be swept; choose from ${SWEEP_POLICIES.join(', ')}`);
  const judge = getJudge(o.judge);
  const maxNewTokens = parseTokenLimit('max-new-tokens', o.maxNewTokens);
  const seed = parseSeed(o.seed);
  const fit = parseFitMode(o.fit, '--fit');
  const n = o.n !== undefined ? parseCount('n', o.n) : undefined;
  const samples = parseCount('samples', o.samples);
  const quantile = o.calibrationQuantile !== undefined ? parseQuantile(o.calibrationQuantile) : DEFAULT_NLL_QUANTILE;
  if (o.calibrationN !== undefined && o.calibrationSet === undefined) throw new Error('--calibration-n applies to --calibration-set: name the set too');

  const warnings: string[] = [];
  const sources: { source: string; role: SweepRole }[] = [
    ...(o.harmful ?? []).map((s) => ({ source: s, role: 'harmful' as const })),
    ...(o.wrapped ?? []).map((s) => ({ source: s, role: 'wrapped' as const })),
    ...(o.benign ?? []).map((s) => ({ source: s, role: 'benign' as const })),
  ];
  const setNames = datasetNamesFor(sources.map((s) => s.source));
  const datasets: SweepDataset[] = [];
  for (const [i, { source, role }] of sources.entries()) {
    const set = await loadPromptSet({ source, name: setNames[i]!, ...(o.textColumn ? { textColumn: o.textColumn } : {}), label: role === 'benign' ? 'benign' : 'harmful' });
    if (set.problems.length > 0) warnings.push(`${source}: skipped ${set.problems.length} malformed rows of ${set.rowsRead}`);
    datasets.push({ name: set.name, role, prompts: pick(set.prompts, n, seed) });
  }
  let calibrationPlan: CalibrationPlan | undefined;
  if (o.calibrationSet !== undefined) {
    calibrationPlan = await namedCalibrationPlan(o.calibrationSet, o.calibrationN, quantile, o.textColumn);
  } else if (quantile !== DEFAULT_NLL_QUANTILE) {
    calibrationPlan = defaultCalibrationPlan(datasets, quantile);
  }

  const model = await loadCommandModel(o);
  try {
    const art = await loadMethodArtefacts(o, model, { allowOtherModel: o.allowOtherModel === true });
    warnings.push(...art.warnings);
    const controller = art.controller?.method ?? null;
    if (controller) await selectBackend();
    const manual = parseManualSettings(o, model.numLayers);
    const policies = resolveConditions(names, { direction: art.direction?.file ?? null, controller, manual });
    const grid = parseGrid(o, model.numLayers);
    const base = await runSettings({
      model: model.identity,
      datasets,
      conditions: names,
      seed,
      maxNewTokens,
      sampling: null,
      steerPromptPositions: 'last',
      fit,
      judge: judge.id,
      directionId: art.direction?.id ?? null,
      controllerId: art.controller?.id ?? null,
      castId: null,
      alpha: null,
      manual: names.includes('manual') ? manual : null,
      coherence: { calibrationSet: calibrationPlan ? `${calibrationPlan.set} (n ${calibrationPlan.prompts.length})` : DEFAULT_CALIBRATION_SET, quantile },
    });
    const planSettings = { ...base, format: 'steerlab-sweep-plan', roles: datasets.map((d) => d.role), grid, samples };
    const planFile = join(o.out, 'sweep-plan.json');
    const stored = await readPlan(planFile);
    if (stored) {
      const diff = settingsDiff(stored, planSettings);
      if (diff.length) throw new Error(`${o.out} holds a sweep with other settings (${diff.join(', ')}); give another --out, or the same settings to resume it`);
    } else {
      await mkdir(o.out, { recursive: true });
      await writeFileAtomic(planFile, `${JSON.stringify(planSettings, null, 2)}\n`);
    }
    const calibration = stored?.['coherence_calibration'] !== undefined ? checkCalibration(stored['coherence_calibration'], planFile) : null;
    const bar = progress ? new ProgressBar('sweep', 0) : null;
    const report = await runSweep(
      {
        model,
        datasets,
        policies,
        grid,
        direction: art.direction?.file.direction ?? null,
        controller,
        directionId: art.direction?.id ?? null,
        controllerId: art.controller?.id ?? null,
        judge,
        maxNewTokens,
        seed,
        fit,
        samples,
        calibration,
        ...(calibrationPlan ? { calibrationPlan } : {}),
      },
      {
        openStore: (id) => openRunStore(join(o.out, 'rows', id)),
        onCalibration: (c) => writeFileAtomic(planFile, `${JSON.stringify({ ...planSettings, coherence_calibration: c }, null, 2)}\n`),
        onProgress: (p) => bar?.update(p.done, p.total, `row ${p.rowIndex + 1}/${p.rows} ${p.row}`),
      },
    );
    if (!report) throw new Error('the sweep was cancelled; rerun the same command to resume');
    const texts = sweepFiles(report);
    const files: Record<string, string> = {};
    for (const f of SWEEP_FILES) {
      files[f] = join(o.out, f);
      await writeFileAtomic(files[f], texts[f]);
    }
    return { report, files, warnings };
  } finally {
    await model.dispose();
  }
}

export function register(program: Command): void {
  addModelOptions(program.command('sweep').description('grid of steering settings on dev sets: keyword and coherent rates, Pareto frontier, operating point (resumable)'))
    .option('--harmful <name|file>', 'dev set of plain harmful requests (repeatable)', collect, [])
    .option('--wrapped <name|file>', 'dev set of jailbreak-wrapped harmful requests (repeatable)', collect, [])
    .option('--benign <name|file>', 'dev set of benign requests (repeatable)', collect, [])
    .option('--text-column <col>', 'user files: the column holding the prompt text (the role gives the label)')
    .option('--n <n>', 'prompts per dataset (seeded sample; default all)')
    .option('--seed <s>', 'sampling seed (prompt choice)', '0')
    .option('--policies <list>', `policies to sweep: ${SWEEP_POLICIES.join(', ')}`, 'was')
    .option('--direction <file>', 'direction file')
    .option('--controller <file>', 'controller file (was, uniform)')
    .option('--scale <s>', 'manual policy: global scale s')
    .option('--layer-weights <list>', 'manual policy: layer weights (one value or one per layer)')
    .option('--enabled-layers <list>', 'manual policy: steer only these layers')
    .option('--alphas <list>', 'alpha values, comma-separated', '1,2,4')
    .option('--modes <list>', `steering modes: ${STEERING_MODES.join(', ')}`, 'add')
    .option('--layer-ranges <list>', 'decoder-layer ranges, comma-separated: "all" or a-b (inclusive)', 'all')
    .option('--positions <list>', `steered positions: ${STEER_POSITIONS.join(', ')}`, 'last')
    .option('--max-new-tokens <t>', 'tokens per reply', '64')
    .option('--fit <mode>', 'prompts longer than the context: none | middle | head | tail', 'middle')
    .option('--judge <id>', `refusal judge: ${JUDGE_IDS.join(' | ')}`, 'was-keywords')
    .option('--samples <k>', 'sample replies kept per row in sweep.json', '3')
    .option('--calibration-set <name|file>', 'reply_nll threshold: calibrate on base replies to this set (default: every dev prompt)')
    .option('--calibration-n <n>', 'prompts of --calibration-set (seed 0; default all)')
    .option('--calibration-quantile <q>', `reply_nll threshold quantile (default ${DEFAULT_NLL_QUANTILE})`)
    .option('--allow-other-model', 'accept a direction or controller made for another model of the same shape')
    .requiredOption('--out <dir>', 'sweep folder (sweep-plan.json, rows/, sweep.json, sweep.csv, sweep.md)')
    .option('--json', 'print sweep.json')
    .action(async (opts: SweepCliOptions) => {
      const r = await runSweepCommand(opts);
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(r.report)}\n`);
        return;
      }
      process.stdout.write(`${sweepMarkdown(r.report)}\nfiles: ${Object.values(r.files).join(', ')}\n`);
    });
}
