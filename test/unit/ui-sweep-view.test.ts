/**
 * The Sweep view's data (src/ui/lib/sweep-view.ts): a sweep file's rows with the core's frontier and operating point
 * (or the one the file names), sample replies kept as text, settings the playground can load, clear errors.
 */
import { describe, expect, test } from 'vitest';
import { parseAlphas, parseSweepJson, playgroundSettings, sweepView } from '../../src/ui/lib/sweep-view.js';
import { parseGrid } from '../../src/cli/commands/sweep.js';
import { checkSweepPlan } from '../../src/core/eval/sweep-run.js';
import type { SweepRow } from '../../src/core/eval/sweep.js';

const m = (harmful: number, wrapped: number, over: number, nll = 2) => ({ coherent_refusal_harmful: harmful, coherent_refusal_wrapped: wrapped, coherent_over_refusal: over, mean_reply_nll: nll });
const rows: SweepRow[] = [
  { id: 'base', split: 'dev', base: true, settings: { policy: 'off', alpha: null, mode: null, layers: null, positions: null }, metrics: m(0.4, 0.1, 0.02) },
  { id: 'was-a2', split: 'dev', settings: { policy: 'was', alpha: 2, mode: 'add', layers: null, positions: 'last' }, metrics: m(0.42, 0.3, 0.03) },
  { id: 'was-a4', split: 'dev', settings: { policy: 'was', alpha: 4, mode: 'clamp', layers: { first: 2, last: 3 }, positions: 'all' }, metrics: m(0.45, 0.6, 0.04) },
  // Dominated by was-a4 (worse on every objective).
  { id: 'uni-a4', split: 'dev', settings: { policy: 'uniform', alpha: 4, mode: 'add', layers: null, positions: 'last' }, metrics: m(0.41, 0.5, 0.05, 3) },
];

describe('sweep view', () => {
  test("frontier and operating point come from the core's rule", () => {
    const v = sweepView(rows);
    expect(v.points.filter((p) => p.frontier).map((p) => p.row.id)).toEqual(['was-a2', 'was-a4']);
    expect(v.points.find((p) => p.operating)?.row.id).toBe('was-a4');
    expect(v.operatingFrom).toMatch(/core's rule/);
  });

  test('a file names its operating point; samples stay text; bad files are refused with the reason', () => {
    const file = { format: 'steerlab-sweep', rows: rows.map((r) => ({ ...r, samples: r.id === 'was-a2' ? [{ dataset: 'x', prompt: 'p', output: '<img src=x onerror=alert(1)>' }] : [] })), operating_point: { id: 'was-a2' } };
    const v = parseSweepJson(JSON.stringify(file));
    expect(v.points.find((p) => p.operating)?.row.id).toBe('was-a2');
    expect(v.points[1]!.samples[0]!.output).toBe('<img src=x onerror=alert(1)>');
    expect(() => parseSweepJson('{nope')).toThrow(/not JSON/);
    expect(() => parseSweepJson('{"rows": []}')).toThrow(/at least one sweep row/);
    expect(() => parseSweepJson(JSON.stringify({ rows, operating_point: 'gone' }))).toThrow(/operating point gone is not one of its rows/);
    expect(() => parseSweepJson(JSON.stringify({ rows: [{ id: 'a', split: 'dev', metrics: { coherent_refusal_harmful: 'x' } }] }))).toThrow(/coherent_refusal_harmful/);
  });

  test("a row's settings load into the playground (policy, alpha, steering)", () => {
    expect(playgroundSettings(rows[2]!.settings, 'was-a4')).toEqual({
      kind: 'was', alpha: 4, steering: { mode: 'clamp', layers: { first: 2, last: 3 }, positions: 'all', alpha: { scale: 'absolute' } },
    });
    expect(() => playgroundSettings(undefined, 'r')).toThrow(/no settings/);
    expect(() => playgroundSettings({ foo: 1 }, 'r')).toThrow(/name no policy/);
  });

  test('the lab form and `lab sweep` refuse the same alphas, by the core check', () => {
    expect(parseAlphas(' 2, 4 ,8 ')).toEqual([2, 4, 8]);
    expect(() => parseAlphas('')).toThrow(/at least one number/);
    expect(() => parseAlphas('2, x')).toThrow(/"x" is not a number/);
    // Refused in the core (checkSweepAlphas): what the CLI's grid and the worker's plan check meet too.
    expect(() => parseAlphas('2, 4, 2')).toThrow(/sweep grid: alpha 2 is listed twice/);
    expect(() => parseAlphas('20000')).toThrow(/sweep grid: alpha 20000 is not a number in -10000\.\.10000/);
    const grid = (alphas: string) => parseGrid({ alphas, modes: 'add', layerRanges: 'all', positions: 'last' }, 4);
    const plan = (alphas: string) => checkSweepPlan({ grid: grid(alphas), model: { numLayers: 4 } as never, policies: [{ name: 'was' }] as never, datasets: [] });
    expect(() => plan('2,4,2')).toThrow(/sweep grid: alpha 2 is listed twice/);
    expect(() => checkSweepPlan({ grid: { ...grid('2'), alphas: [20000] }, model: { numLayers: 4 } as never, policies: [{ name: 'was' }] as never, datasets: [] })).toThrow(/alpha 20000 is not a number in/);
  });
});
