/**
 * A steering sweep: a grid of settings (alpha x mode x layer range x positions, per policy) evaluated on DEV sets
 * through the one eval runner (runner.ts runEval), then the Pareto frontier and the operating point of sweep.ts.
 * Platform-free: the record stores come from deps (a JSONL folder per row in Node, IndexedDB in the lab, memory in
 * tests), so an interrupted sweep resumes row by row, record by record.
 *
 * Order: the base row (policy off) runs first and fixes the reply_nll calibration (coherence-run.ts; default: base
 * replies to every dev prompt); every grid row is judged with that same calibration and compares its replies
 * with the base row's (changed_from_base). Each dev dataset has a role: 'harmful' (plain harmful requests),
 * 'wrapped' (jailbreak-wrapped harmful requests) or 'benign'; every role needs at least one dataset.
 *
 * The JSON (SweepReport, format 'steerlab-sweep' version 1) is what the lab's Sweep view reads: rows with id,
 * settings, metrics, frontier and operating-point flags and a few sample replies each.
 */
import Papa from 'papaparse';
import type { PromptRecord } from '../data/types.js';
import type { SteerableModel } from '../model/steerable.js';
import type { EvalCondition } from '../method/conditions.js';
import type { MethodController } from '../method/flow.js';
import { STEERING_MODES, STEER_POSITIONS, type SteeringMode, type SteeringSettings, type SteerPositions } from '../steering/modes.js';
import type { FitMode } from '../method/fit.js';
import type { NllCalibration } from './coherence.js';
import { COHERENT_REFUSAL_RULE } from './coherence.js';
import type { CalibrationPlan } from './coherence-run.js';
import type { RefusalJudge } from './judges.js';
import type { EvalRecord, RecordStore } from './records.js';
import { runEval, type EvalDataset } from './runner.js';
import { wilsonInterval, Z95 } from './stats.js';
import { checkSweepAlphas, chooseOperatingPoint, type OperatingPointOptions, type SweepMetrics, type SweepRow } from './sweep.js';

export const SWEEP_ROLES = ['harmful', 'wrapped', 'benign'] as const;
export type SweepRole = (typeof SWEEP_ROLES)[number];

/** Policies a sweep varies alpha for (their rows are s * w_l * alpha * d). */
export const SWEEP_POLICIES = ['was', 'uniform', 'manual'] as const;

export interface SweepDataset extends EvalDataset {
  role: SweepRole;
}

export interface SweepGrid {
  alphas: number[];
  modes: SteeringMode[];
  /** Inclusive decoder-layer ranges; null = all layers. */
  layerRanges: ({ first: number; last: number } | null)[];
  positions: SteerPositions[];
}

export interface SweepPlan {
  model: SteerableModel;
  datasets: readonly SweepDataset[];
  /** Resolved conditions of the policies to sweep (was, uniform, manual); alpha is replaced by the grid's. */
  policies: readonly EvalCondition[];
  grid: SweepGrid;
  direction: Float32Array | null;
  controller: MethodController | null;
  directionId: string | null;
  controllerId: string | null;
  judge: RefusalJudge;
  maxNewTokens: number;
  seed: number;
  fit?: FitMode;
  /** Sample replies kept per row for the Sweep view (default 3). */
  samples?: number;
  /** Records decoded together in each row (runEval's batch; default its own). */
  batch?: number;
  calibrationPlan?: CalibrationPlan;
  /** A stored calibration (resumed sweep); absent: the base row makes it. */
  calibration?: NllCalibration | null;
  operatingPoint?: OperatingPointOptions;
}

export interface SweepDeps {
  /** The record store of one row (opened empty or with what an interrupted sweep stored). */
  openStore(rowId: string): Promise<RecordStore>;
  /** Told the calibration once the base row made it (to store with the sweep, for a resume). */
  onCalibration?: (c: NllCalibration) => void | Promise<void>;
  onProgress?: (p: { row: string; rowIndex: number; rows: number; done: number; total: number }) => void;
  signal?: AbortSignal;
}

/** A row's settings as plain data (records carry the same). */
export interface SweepSettings {
  policy: string;
  alpha: number | null;
  mode: SteeringMode | null;
  layers: { first: number; last: number } | null;
  positions: SteerPositions | null;
}

export interface RateWithInterval {
  k: number;
  n: number;
  rate: number | null;
  ci_low: number | null;
  ci_high: number | null;
}

/** Everything measured for a row: the four objectives of sweep.ts plus keyword rates and the benign measures. */
export interface SweepRowMetrics extends SweepMetrics {
  changed_benign: number | null;
  keyword: { harmful: RateWithInterval; wrapped: RateWithInterval; benign: RateWithInterval };
  coherent: { harmful: RateWithInterval; wrapped: RateWithInterval; benign: RateWithInterval };
  mean_first_token_kl_benign: number | null;
  /** Records that could not be run (error), left out of every rate. */
  failed: number;
}

export interface SweepSample {
  dataset: string;
  role: SweepRole;
  id: string;
  prompt: string;
  output: string;
  refused: boolean;
  coherent_refusal: boolean | null;
  reply_nll: number | null;
  finish_reason: string | null;
}

export interface SweepReportRow {
  id: string;
  split: 'dev';
  base: boolean;
  settings: SweepSettings;
  metrics: SweepRowMetrics;
  frontier: boolean;
  operating_point: boolean;
  samples: SweepSample[];
}

export interface SweepReport {
  format: 'steerlab-sweep';
  version: 1;
  model_id: string;
  direction_id: string | null;
  controller_id: string | null;
  judge: string;
  max_new_tokens: number;
  seed: number;
  datasets: { name: string; role: SweepRole; n: number }[];
  grid: SweepGrid;
  calibration: NllCalibration;
  coherent_refusal_rule: string;
  interval: { kind: 'wilson'; z: number };
  rows: SweepReportRow[];
  frontier: string[];
  operating_point: { id: string | null; rule: string; limits: Required<OperatingPointOptions>; infeasible: Record<string, string[]> };
}

const fmt = (x: number) => String(x).replace('-', 'm').replace('.', 'p');

/** A row id usable as a folder name: policy_a<alpha>_<mode>_<layers>_<positions>. */
export function sweepRowId(s: SweepSettings): string {
  if (s.policy === 'base') return 'base';
  const layers = s.layers ? `L${s.layers.first}-${s.layers.last}` : 'Lall';
  return `${s.policy}_a${fmt(s.alpha ?? 0)}_${s.mode}_${layers}_${s.positions}`;
}

/** Checks the plan's grid and datasets; every bad entry is named. */
export function checkSweepPlan(p: Pick<SweepPlan, 'datasets' | 'policies' | 'grid' | 'model'>): void {
  const g = p.grid;
  const nonEmpty = (name: string, xs: readonly unknown[]) => {
    if (!Array.isArray(xs) || xs.length === 0) throw new Error(`sweep grid: ${name} must list at least one value`);
    if (new Set(xs.map((x) => JSON.stringify(x))).size !== xs.length) throw new Error(`sweep grid: ${name} lists a value twice`);
  };
  checkSweepAlphas(g.alphas);
  nonEmpty('modes', g.modes);
  nonEmpty('layer ranges', g.layerRanges);
  nonEmpty('positions', g.positions);
  for (const m of g.modes) if (!(STEERING_MODES as readonly string[]).includes(m)) throw new Error(`sweep grid: mode ${m} is not one of ${STEERING_MODES.join(', ')}`);
  for (const x of g.positions) if (!(STEER_POSITIONS as readonly string[]).includes(x)) throw new Error(`sweep grid: positions ${x} is not one of ${STEER_POSITIONS.join(', ')}`);
  for (const r of g.layerRanges) {
    if (r && !(Number.isSafeInteger(r.first) && Number.isSafeInteger(r.last) && r.first >= 0 && r.first <= r.last && r.last < p.model.numLayers)) {
      throw new Error(`sweep grid: layer range ${JSON.stringify(r)} is not first..last within decoder layers 0..${p.model.numLayers - 1}`);
    }
  }
  if (p.policies.length === 0) throw new Error(`a sweep needs at least one policy (${SWEEP_POLICIES.join(', ')})`);
  for (const c of p.policies) if (!(SWEEP_POLICIES as readonly string[]).includes(c.name)) throw new Error(`policy '${c.name}' cannot be swept (its strength is not an alpha); sweep ${SWEEP_POLICIES.join(', ')}`);
  for (const d of p.datasets) {
    if (!(SWEEP_ROLES as readonly string[]).includes(d.role)) throw new Error(`sweep dataset ${d.name} has role ${JSON.stringify(d.role)}; expected one of ${SWEEP_ROLES.join(', ')}`);
  }
  for (const role of SWEEP_ROLES) if (!p.datasets.some((d) => d.role === role)) throw new Error(`a sweep needs at least one ${role} dev dataset (roles: harmful, wrapped, benign)`);
  const names = p.datasets.map((d) => d.name);
  if (new Set(names).size !== names.length) throw new Error(`sweep datasets must have distinct names, got ${names.join(', ')}`);
}

/** The grid rows in sweep order: per policy, alpha ascending (weaker settings first), then mode, layers, positions. */
export function sweepRows(p: Pick<SweepPlan, 'policies' | 'grid'>): { settings: SweepSettings; condition: EvalCondition }[] {
  const out: { settings: SweepSettings; condition: EvalCondition }[] = [];
  const alphas = [...p.grid.alphas].sort((a, b) => a - b);
  for (const c of p.policies) {
    for (const alpha of alphas) {
      for (const mode of p.grid.modes) {
        for (const layers of p.grid.layerRanges) {
          for (const positions of p.grid.positions) {
            out.push({ settings: { policy: c.name, alpha, mode, layers, positions }, condition: { name: c.name, policy: { ...c.policy, alpha } as EvalCondition['policy'] } });
          }
        }
      }
    }
  }
  return out;
}

function rate(k: number, n: number): RateWithInterval {
  const ci = wilsonInterval(k, n, Z95);
  const z = (x: number) => (Number.isNaN(x) ? null : x);
  return { k, n, rate: z(ci.rate), ci_low: z(ci.low), ci_high: z(ci.high) };
}

/** A row's metrics from its records (judged records only; error records counted in failed). */
export function sweepMetrics(records: readonly EvalRecord[], roleOf: (dataset: string) => SweepRole): SweepRowMetrics {
  const judged = records.filter((r) => typeof r['refused'] === 'boolean');
  const of = (role: SweepRole) => judged.filter((r) => roleOf(r.dataset) === role);
  const kw = (role: SweepRole) => rate(of(role).filter((r) => r['refused'] === true).length, of(role).length);
  const co = (role: SweepRole) => {
    const rs = of(role).filter((r) => typeof r['coherent_refusal'] === 'boolean');
    return rate(rs.filter((r) => r['coherent_refusal'] === true).length, rs.length);
  };
  const coherent = { harmful: co('harmful'), wrapped: co('wrapped'), benign: co('benign') };
  const need = (name: string, r: RateWithInterval) => {
    if (r.rate === null) throw new Error(`sweep: no judged ${name} records in this row (every prompt failed?); the row has no ${name} rate`);
    return r.rate;
  };
  const nlls = judged.map((r) => r['reply_nll']).filter((x): x is number => typeof x === 'number');
  const benign = of('benign');
  const changed = benign.filter((r) => typeof r['changed_from_base'] === 'boolean');
  const kls = benign.map((r) => r['first_token_kl']).filter((x): x is number => typeof x === 'number');
  return {
    coherent_refusal_harmful: need('harmful', coherent.harmful),
    coherent_refusal_wrapped: need('wrapped', coherent.wrapped),
    coherent_over_refusal: need('benign', coherent.benign),
    // a row whose replies all have fewer than 2 tokens has no reply_nll: +Infinity would break the frontier's order
    mean_reply_nll: nlls.length ? nlls.reduce((a, b) => a + b, 0) / nlls.length : Number.MAX_VALUE,
    changed_benign: changed.length ? changed.filter((r) => r['changed_from_base'] === true).length / changed.length : null,
    keyword: { harmful: kw('harmful'), wrapped: kw('wrapped'), benign: kw('benign') },
    coherent,
    mean_first_token_kl_benign: kls.length ? kls.reduce((a, b) => a + b, 0) / kls.length : null,
    failed: records.length - judged.length,
  };
}

/** A few replies per row, one role after another (harmful, wrapped, benign), in dataset order. */
function samplesOf(records: readonly EvalRecord[], roleOf: (d: string) => SweepRole, k: number): SweepSample[] {
  const judged = records.filter((r) => typeof r['output'] === 'string');
  const out: SweepSample[] = [];
  for (let i = 0; out.length < k && i < judged.length; i++) {
    for (const role of SWEEP_ROLES) {
      const r = judged.filter((x) => roleOf(x.dataset) === role)[i];
      if (!r || out.length >= k) continue;
      out.push({
        dataset: r.dataset,
        role,
        id: r.id,
        prompt: String(r['prompt'] ?? ''),
        output: String(r['output']),
        refused: r['refused'] === true,
        coherent_refusal: typeof r['coherent_refusal'] === 'boolean' ? r['coherent_refusal'] : null,
        reply_nll: typeof r['reply_nll'] === 'number' ? r['reply_nll'] : null,
        finish_reason: typeof r['finish_reason'] === 'string' ? r['finish_reason'] : null,
      });
    }
  }
  return out;
}

/** Runs the sweep: the base row, then every grid row, each through runEval; returns the report (null when cancelled). */
export async function runSweep(plan: SweepPlan, deps: SweepDeps): Promise<SweepReport | null> {
  checkSweepPlan(plan);
  const roles = new Map(plan.datasets.map((d) => [d.name, d.role]));
  const roleOf = (d: string) => roles.get(d)!;
  const datasets: EvalDataset[] = plan.datasets.map((d) => ({ name: d.name, prompts: d.prompts as readonly PromptRecord[] }));
  const grid = sweepRows(plan);
  const all = [{ settings: { policy: 'base', alpha: null, mode: null, layers: null, positions: null } as SweepSettings, condition: { name: 'base', policy: { kind: 'off' } } as EvalCondition }, ...grid];
  const ids = all.map((r) => sweepRowId(r.settings));
  if (new Set(ids).size !== ids.length) throw new Error('sweep: two grid rows have the same settings');
  let calibration = plan.calibration ?? null;
  let baseStore: RecordStore | null = null;
  const rows: { id: string; settings: SweepSettings; records: EvalRecord[] }[] = [];
  try {
    for (const [i, row] of all.entries()) {
      const id = ids[i]!;
      const store = await deps.openStore(id);
      const isBase = row.condition.name === 'base';
      const settings: SteeringSettings | undefined = isBase
        ? undefined
        : { mode: row.settings.mode!, layers: row.settings.layers, positions: row.settings.positions!, alpha: { scale: 'absolute' } };
      try {
        const r = await runEval({
          model: plan.model,
          datasets,
          conditions: [row.condition],
          direction: plan.direction,
          controller: plan.controller,
          directionId: plan.directionId,
          controllerId: plan.controllerId,
          store,
          judge: plan.judge,
          maxNewTokens: plan.maxNewTokens,
          sampling: null,
          seed: plan.seed,
          ...(plan.fit ? { fit: plan.fit } : {}),
          ...(plan.batch !== undefined ? { batch: plan.batch } : {}),
          ...(settings ? { settings } : {}),
          calibration,
          ...(plan.calibrationPlan ? { calibrationPlan: plan.calibrationPlan } : {}),
          ...(isBase && deps.onCalibration ? { onCalibration: deps.onCalibration } : {}),
          ...(baseStore ? { baseRecords: baseStore } : {}),
          ...(deps.signal ? { signal: deps.signal } : {}),
          onProgress: (p) => deps.onProgress?.({ row: id, rowIndex: i, rows: all.length, done: p.done, total: p.total }),
        });
        if (r.cancelled) return null;
        calibration ??= r.calibration;
        rows.push({ id, settings: row.settings, records: [...store.records()] });
      } finally {
        if (isBase) baseStore = store;
        else await store.close();
      }
    }
  } finally {
    await (baseStore as RecordStore | null)?.close();
  }
  const sweepRowsData: SweepRow<SweepSettings>[] = rows.map((r, i) => {
    const metrics = sweepMetrics(r.records, roleOf);
    return { id: r.id, split: 'dev', ...(i === 0 ? { base: true } : {}), settings: r.settings, metrics: i === 0 ? { ...metrics, changed_benign: 0 } : metrics };
  });
  const op = chooseOperatingPoint(sweepRowsData, plan.operatingPoint ?? {});
  const onFrontier = new Set(op.frontier.map((r) => r.id));
  return {
    format: 'steerlab-sweep',
    version: 1,
    model_id: plan.model.identity.id,
    direction_id: plan.directionId,
    controller_id: plan.controllerId,
    judge: plan.judge.id,
    max_new_tokens: plan.maxNewTokens,
    seed: plan.seed,
    datasets: plan.datasets.map((d) => ({ name: d.name, role: d.role, n: d.prompts.length })),
    grid: plan.grid,
    calibration: calibration!,
    coherent_refusal_rule: COHERENT_REFUSAL_RULE,
    interval: { kind: 'wilson', z: Z95 },
    rows: sweepRowsData.map((r, i) => ({
      id: r.id,
      split: 'dev',
      base: r.base === true,
      settings: r.settings!,
      metrics: r.metrics as SweepRowMetrics,
      frontier: onFrontier.has(r.id),
      operating_point: op.chosen?.id === r.id,
      samples: samplesOf(rows[i]!.records, roleOf, plan.samples ?? 3),
    })),
    frontier: op.frontier.map((r) => r.id),
    operating_point: { id: op.chosen?.id ?? null, rule: op.rule, limits: op.limits, infeasible: op.infeasible },
  };
}

// ------------------------------------------------------------------------------------------------ files

const pctCell = (r: RateWithInterval) => (r.rate === null ? '' : r.rate);

const CSV_COLUMNS = [
  'id', 'policy', 'alpha', 'mode', 'layers', 'positions', 'frontier', 'operating_point',
  'coherent_refusal_harmful', 'coherent_refusal_harmful_ci_low', 'coherent_refusal_harmful_ci_high',
  'coherent_refusal_wrapped', 'coherent_refusal_wrapped_ci_low', 'coherent_refusal_wrapped_ci_high',
  'coherent_over_refusal', 'coherent_over_refusal_ci_low', 'coherent_over_refusal_ci_high',
  'refusal_harmful', 'refusal_wrapped', 'over_refusal', 'mean_reply_nll', 'changed_benign', 'mean_first_token_kl_benign', 'failed',
] as const;

/** One line per row: settings, flags, coherent rates with Wilson bounds, keyword rates, benign measures. */
export function sweepCsvRows(rep: SweepReport): { fields: string[]; data: (string | number | boolean)[][] } {
  const data = rep.rows.map((r) => {
    const m = r.metrics;
    const c = m.coherent;
    return [
      r.id, r.settings.policy, r.settings.alpha ?? '', r.settings.mode ?? '', r.settings.layers ? `${r.settings.layers.first}-${r.settings.layers.last}` : r.base ? '' : 'all', r.settings.positions ?? '',
      r.frontier, r.operating_point,
      pctCell(c.harmful), c.harmful.ci_low ?? '', c.harmful.ci_high ?? '',
      pctCell(c.wrapped), c.wrapped.ci_low ?? '', c.wrapped.ci_high ?? '',
      pctCell(c.benign), c.benign.ci_low ?? '', c.benign.ci_high ?? '',
      pctCell(m.keyword.harmful), pctCell(m.keyword.wrapped), pctCell(m.keyword.benign),
      m.mean_reply_nll, m.changed_benign ?? '', m.mean_first_token_kl_benign ?? '', m.failed,
    ];
  });
  return { fields: [...CSV_COLUMNS], data };
}

const p1 = (r: RateWithInterval) => (r.rate === null ? '–' : `${(100 * r.rate).toFixed(1)} (${(100 * r.ci_low!).toFixed(1)}–${(100 * r.ci_high!).toFixed(1)})`);

/** The Markdown report: one table, keyword and coherent side by side, the frontier and the operating point. */
export function sweepMarkdown(rep: SweepReport): string {
  const cell = (t: string) => t.replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/[\r\n]+/g, ' ');
  const lines = [
    `# Sweep on dev sets (${rep.datasets.map((d) => `${cell(d.name)}: ${d.role}, n ${d.n}`).join('; ')})`,
    '',
    `Rates in %, Wilson 95 % intervals in brackets. reply_nll threshold T = ${rep.calibration.value.toFixed(4)} (q ${rep.calibration.quantile}, n ${rep.calibration.n}, set ${cell(rep.calibration.set)}).`,
    '',
    '| row | frontier | harmful: keyword | harmful: coherent | wrapped: keyword | wrapped: coherent | benign over-refusal: keyword | benign: coherent | mean reply_nll | benign changed (%) | first-token KL |',
    '|---|---|---|---|---|---|---|---|---:|---:|---:|',
    ...rep.rows.map((r) => {
      const m = r.metrics;
      const flag = r.operating_point ? 'operating point' : r.frontier ? 'yes' : r.base ? 'base' : '';
      return `| ${cell(r.id)} | ${flag} | ${p1(m.keyword.harmful)} | ${p1(m.coherent.harmful)} | ${p1(m.keyword.wrapped)} | ${p1(m.coherent.wrapped)} | ${p1(m.keyword.benign)} | ${p1(m.coherent.benign)} | ${m.mean_reply_nll.toFixed(3)} | ${m.changed_benign === null ? '–' : (100 * m.changed_benign).toFixed(1)} | ${m.mean_first_token_kl_benign === null ? '–' : m.mean_first_token_kl_benign.toFixed(4)} |`;
    }),
    '',
    `Pareto frontier: ${rep.frontier.join(', ') || '(none)'}.`,
    `Operating point: ${rep.operating_point.id ?? 'none (no feasible row on the frontier)'}. Rule: ${rep.operating_point.rule}.`,
    '',
    `Coherent refusal: ${rep.coherent_refusal_rule}.`,
  ];
  return `${lines.join('\n')}\n`;
}

export const SWEEP_FILES = ['sweep.json', 'sweep.csv', 'sweep.md'] as const;

/** The three files of a sweep report (the CLI writes them; the lab can export the same). */
export function sweepFiles(rep: SweepReport): Record<(typeof SWEEP_FILES)[number], string> {
  const { fields, data } = sweepCsvRows(rep);
  return {
    'sweep.json': `${JSON.stringify(rep, null, 2)}\n`,
    'sweep.csv': `${Papa.unparse({ fields, data }, { newline: '\n', escapeFormulae: true })}\n`,
    'sweep.md': sweepMarkdown(rep),
  };
}
