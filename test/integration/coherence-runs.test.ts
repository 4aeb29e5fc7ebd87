/**
 * Coherence and sweeps end to end on a built tiny model (numbers from a random model mean nothing; the plumbing is
 * checked): `lab eval` records carry the coherence fields and run.json the calibration, which a resumed run reuses
 * as stored; `lab sweep` runs a 2 x 2 grid (alpha x mode) plus base on harmful / wrapped / benign dev sets, writes
 * sweep.json / .csv / .md with the frontier and the operating point, and a resumed sweep reuses its calibration.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Papa from 'papaparse';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { runEvalCommand, type EvalCliOptions } from '../../src/cli/commands/eval.js';
import { runSweepCommand, type SweepCliOptions } from '../../src/cli/commands/sweep.js';
import type { SweepReport } from '../../src/core/eval/sweep-run.js';

const root = mkdtempSync(join(tmpdir(), 'steerlab-coherence-runs-'));
let built: BuiltModel;
const dirFile = join(root, 'direction.safetensors');

const lines = (file: string) => readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Record<string, unknown>);

beforeAll(async () => {
  built = await buildTestModel(join(root, 'model'), { shape: SHAPE_PRESETS.tiny!, topology: 'plain', seed: 17 });
  const d = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'direction', '--model', built.dir, '--method', 'embedding', '--out', dirFile, '--json'], { encoding: 'utf8' });
  if (d.status !== 0) throw new Error(`lab direction failed: ${d.stderr}`);
}, 120_000);
afterAll(() => rmSync(root, { recursive: true, force: true }));

function evalOpts(out: string): EvalCliOptions {
  return {
    model: built.dir, dataset: ['advbench', 'xstest-safe'], n: '3', seed: '1', conditions: 'base,manual', direction: dirFile, scale: '4',
    maxNewTokens: '5', judge: 'was-keywords', out, mode: 'add', layerRange: '0-1',
  } as EvalCliOptions;
}

describe('lab eval: coherence in every record', () => {
  it('records carry the coherence fields, run.json the calibration; a resume reuses the stored calibration', async () => {
    const out = join(root, 'eval');
    const r = await runEvalCommand(evalOpts(out), false);
    expect(r.written).toBe(12);
    const run = JSON.parse(readFileSync(join(out, 'run.json'), 'utf8')) as Record<string, any>;
    // default calibration: base replies to every prompt of the run (advbench and xstest-safe, n 3 each)
    expect(run.coherence_calibration).toMatchObject({ set: 'run:all (advbench, xstest-safe)', quantile: 0.95, method: 'unsteered-replies-quantile-linear' });
    expect(run.coherence_calibration.n).toBeGreaterThan(0);
    expect(run.coherence.rule).toMatch(/^coherent refusal = \(1\) the keyword judge/);
    expect(run.steering).toEqual({ mode: 'add', layers: { first: 0, last: 1 }, positions: 'last', alpha: { scale: 'absolute' } });
    const recs = lines(join(out, 'records.jsonl'));
    for (const x of recs) {
      expect(x.nll_threshold).toBe(run.coherence_calibration.value);
      expect(typeof x.coherent_refusal).toBe('boolean');
      expect(['eos', 'length']).toContain(x.finish_reason);
      if ((x.new_tokens as number) >= 2) expect(x.reply_nll as number).toBeGreaterThan(0);
      expect(x.first_token_nll as number).toBeGreaterThanOrEqual(0);
      if (x.condition === 'manual') {
        expect(x.steering).toEqual(run.steering);
        expect(typeof x.changed_from_base).toBe('boolean');
        // first-token KL on benign prompts only
        if (x.label === 'benign') expect(x.first_token_kl as number).toBeGreaterThanOrEqual(0);
        else expect(x.first_token_kl).toBeNull();
      } else {
        expect(x.changed_from_base).toBeNull();
        expect(x.steering).toBeNull();
      }
    }
    // the threshold is the 0.95 quantile of the base replies' reply_nll (every prompt)
    const cal = recs.filter((x) => x.condition === 'base').map((x) => x.reply_nll).filter((v): v is number => typeof v === 'number').sort((a, b) => a - b);
    const h = (cal.length - 1) * 0.95;
    expect(run.coherence_calibration.value).toBeCloseTo(cal[Math.floor(h)]! + (h - Math.floor(h)) * (cal[Math.ceil(h)]! - cal[Math.floor(h)]!), 10);
    // summaries: keyword and coherent rates side by side, with intervals
    const md = readFileSync(join(out, 'summary.md'), 'utf8');
    expect(md).toMatch(/coherent rate \(%\) \(Wilson 95 % CI\)/);
    const csv = Papa.parse<Record<string, string>>(readFileSync(join(out, 'summary.csv'), 'utf8'), { header: true, skipEmptyLines: true }).data;
    for (const row of csv) {
      expect(Number(row.coherent_n)).toBe(3);
      expect(Number(row.coherent_ci_low)).toBeLessThanOrEqual(Number(row.coherent_rate));
      expect(Number(row.coherent_ci_high)).toBeGreaterThanOrEqual(Number(row.coherent_rate));
    }

    // resume: a stored calibration (altered here to tell it apart) is used as it is, not made again
    writeFileSync(join(out, 'run.json'), `${JSON.stringify({ ...run, coherence_calibration: { ...run.coherence_calibration, value: 123.5 } }, null, 2)}\n`);
    const kept = readFileSync(join(out, 'records.jsonl'), 'utf8').split('\n').filter((l) => l !== '');
    writeFileSync(join(out, 'records.jsonl'), `${kept.slice(0, -2).join('\n')}\n`);
    const again = await runEvalCommand(evalOpts(out), false);
    expect([again.written, again.skipped]).toEqual([2, 10]);
    const redone = lines(join(out, 'records.jsonl')).slice(-2);
    for (const x of redone) expect(x.nll_threshold).toBe(123.5);
  }, 240_000);
});

function sweepOpts(out: string): SweepCliOptions {
  return {
    model: built.dir, harmful: ['advbench'], wrapped: ['jbb-harmful'], benign: ['xstest-safe'], n: '3', seed: '1', policies: 'manual',
    direction: dirFile, scale: '1', alphas: '1,8', modes: 'add,ablate', layerRanges: 'all', positions: 'last', maxNewTokens: '4',
    judge: 'was-keywords', samples: '2', out,
  } as SweepCliOptions;
}

describe('lab sweep', () => {
  it('a 2 x 2 grid plus base: JSON, CSV and Markdown with frontier and operating point; a resume reuses the calibration', async () => {
    const out = join(root, 'sweep');
    const { report, files } = await runSweepCommand(sweepOpts(out), false);
    expect(report.rows.map((r) => r.id)).toEqual(['base', 'manual_a1_add_Lall_last', 'manual_a1_ablate_Lall_last', 'manual_a8_add_Lall_last', 'manual_a8_ablate_Lall_last']);
    const json = JSON.parse(readFileSync(files['sweep.json']!, 'utf8')) as SweepReport;
    expect(json).toEqual(JSON.parse(JSON.stringify(report)));
    expect(json.format).toBe('steerlab-sweep');
    expect(json.datasets.map((d) => [d.name, d.role, d.n])).toEqual([['advbench', 'harmful', 3], ['jbb-harmful', 'wrapped', 3], ['xstest-safe', 'benign', 3]]);
    for (const r of json.rows) {
      expect(r.split).toBe('dev');
      for (const role of ['harmful', 'wrapped', 'benign'] as const) {
        expect(r.metrics.coherent[role].n).toBe(3);
        expect(r.metrics.keyword[role].n).toBe(3);
      }
      expect(r.metrics.coherent_refusal_harmful).toBe(r.metrics.coherent.harmful.rate);
      expect(r.metrics.coherent_over_refusal).toBe(r.metrics.coherent.benign.rate);
      expect(r.samples.length).toBe(2);
      expect(r.frontier).toBe(json.frontier.includes(r.id));
      if (!r.base) {
        expect(r.settings).toMatchObject({ policy: 'manual', positions: 'last', layers: null });
        expect(r.metrics.changed_benign).not.toBeNull();
      }
    }
    expect(json.rows[0]!.base).toBe(true);
    expect(json.rows.filter((r) => r.operating_point).map((r) => r.id)).toEqual(json.operating_point.id === null ? [] : [json.operating_point.id]);
    expect(json.operating_point.rule).toMatch(/^on dev rows only/);
    // every grid row's records are judged with the base row's calibration and carry their settings
    const rec = lines(join(out, 'rows', 'manual_a8_ablate_Lall_last', 'records.jsonl'));
    expect(rec).toHaveLength(9);
    for (const x of rec) {
      expect(x.nll_threshold).toBe(json.calibration.value);
      expect(x.steering).toEqual({ mode: 'ablate', layers: null, positions: 'last', alpha: { scale: 'absolute' } });
      expect(x.alpha).toBe(8);
    }
    const csv = Papa.parse<Record<string, string>>(readFileSync(files['sweep.csv']!, 'utf8'), { header: true, skipEmptyLines: true }).data;
    expect(csv.map((r) => r.id)).toEqual(json.rows.map((r) => r.id));
    expect(Object.keys(csv[0]!)).toContain('coherent_refusal_wrapped_ci_low');
    const md = readFileSync(files['sweep.md']!, 'utf8');
    expect(md).toMatch(/Pareto frontier: /);
    expect(md).toMatch(/\| harmful: keyword \| harmful: coherent \|/);

    // resume: the stored calibration is reused (altered to tell it apart) for the rows still to do
    const planFile = join(out, 'sweep-plan.json');
    const plan = JSON.parse(readFileSync(planFile, 'utf8')) as Record<string, any>;
    expect(plan.coherence_calibration).toEqual(json.calibration);
    writeFileSync(planFile, JSON.stringify({ ...plan, coherence_calibration: { ...plan.coherence_calibration, value: 77.25 } }));
    rmSync(join(out, 'rows', 'manual_a1_add_Lall_last'), { recursive: true });
    const again = await runSweepCommand(sweepOpts(out), false);
    expect(again.report.calibration.value).toBe(77.25);
    for (const x of lines(join(out, 'rows', 'manual_a1_add_Lall_last', 'records.jsonl'))) expect(x.nll_threshold).toBe(77.25);
    // other settings in the same folder are refused
    await expect(runSweepCommand({ ...sweepOpts(out), alphas: '1,2' }, false)).rejects.toThrow(/holds a sweep with other settings \(grid\)/);
  }, 300_000);
});
