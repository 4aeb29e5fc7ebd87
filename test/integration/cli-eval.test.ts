/**
 * End to end through the CLI on a built tiny model: lab direction -> lab train-controller -> lab eval with
 * base,uniform,was on ToxicChat test samples (--json contract checked), then resume: an eval child killed with
 * SIGKILL after some records were written, rerun, must end with no lost or duplicate rows and the same records and
 * summary as the uninterrupted run. Each command runs as its own process (node --import tsx src/cli/main.ts).
 * Numbers from a random model mean nothing; only the plumbing is checked.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { runEvalCommand } from '../../src/cli/commands/eval.js';

const root = mkdtempSync(join(tmpdir(), 'steerlab-cli-eval-'));
let built: BuiltModel;
const dirFile = join(root, 'direction.safetensors');
const ctrlFile = join(root, 'controller.safetensors');

function lab(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function evalArgs(out: string): string[] {
  return [
    'eval', '--model', built.dir, '--dataset', 'toxicchat-test', '--dataset', 'xstest-safe', '--n', '4', '--seed', '3',
    '--conditions', 'base,uniform,was', '--direction', dirFile, '--controller', ctrlFile, '--max-new-tokens', '6', '--out', out, '--json',
  ];
}

function lines(file: string): Record<string, unknown>[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
}

const keyOf = (r: Record<string, unknown>) => JSON.stringify([r.dataset, r.id, r.condition]);
/** What must not depend on interruption: everything but the timings. */
const stable = (r: Record<string, unknown>) => ({ ...r, timings: undefined });

beforeAll(async () => {
  built = await buildTestModel(join(root, 'model'), { shape: SHAPE_PRESETS.tiny!, topology: 'plain', seed: 17 });
}, 60_000);
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('lab direction -> train-controller -> eval', () => {
  let first: { summary: Record<string, unknown>[]; records: string };

  it('direction and controller files are made and described as JSON', () => {
    const d = lab(['direction', '--model', built.dir, '--method', 'embedding', '--out', dirFile, '--json']);
    expect(d.stderr).not.toMatch(/^lab:/m);
    expect(d.status).toBe(0);
    const dj = JSON.parse(d.stdout) as { embedding: { source_matrix: string }; id: string };
    expect(dj.embedding.source_matrix).toBe('unembedding');
    const t = lab([
      'train-controller', '--model', built.dir, '--direction', dirFile, '--harmful', 'harmful-train', '--benign', 'harmless-train',
      '--n', '8', '--epochs', '2', '--seed', '1', '--out', ctrlFile, '--json',
    ]);
    expect(t.status).toBe(0);
    const tj = JSON.parse(t.stdout) as { epochs: unknown[]; direction_id: string; held_out_accuracy: number; input_layers: number[] };
    expect(tj.epochs).toHaveLength(2);
    expect(tj.direction_id).toBe(dj.id);
    expect(tj.input_layers).toEqual([3]);
    expect(tj.held_out_accuracy).toBeGreaterThanOrEqual(0);
  }, 60_000);

  it('eval --json prints exactly the contract, and writes records and summaries', () => {
    const out = join(root, 'run-a');
    const r = lab(evalArgs(out));
    expect(r.status).toBe(0);
    first = JSON.parse(r.stdout) as typeof first;
    expect(Object.keys(first).sort()).toEqual(['records', 'summary']);
    expect(first.records).toBe(join(out, 'records.jsonl'));
    expect(first.summary).toHaveLength(6);
    for (const row of first.summary) {
      expect(Object.keys(row).sort()).toEqual(['ci_high', 'ci_low', 'condition', 'dataset', 'n', 'refusal_rate', 'refusals']);
      expect(row.n).toBe(4);
      expect(row.ci_low as number).toBeLessThanOrEqual(row.refusal_rate as number);
      expect(row.ci_high as number).toBeGreaterThanOrEqual(row.refusal_rate as number);
    }
    expect(first.summary.map((s) => `${s.dataset}/${s.condition}`)).toEqual([
      'toxicchat-test/base', 'toxicchat-test/uniform', 'toxicchat-test/was', 'xstest-safe/base', 'xstest-safe/uniform', 'xstest-safe/was',
    ]);
    const recs = lines(first.records);
    expect(recs).toHaveLength(24);
    for (const rec of recs) {
      expect(typeof rec.output).toBe('string');
      expect(typeof rec.refused).toBe('boolean');
      expect(rec.judge).toBe('was-keywords');
      expect(typeof rec.s).toBe('number');
      expect(rec.w).toHaveLength(4);
      expect(rec.row_norms === null).toBe(rec.condition === 'base');
      expect((rec.timings as { total_ms: number }).total_ms).toBeGreaterThan(0);
      // What the model saw: the prompt's length before fitting, and whether it was shortened (--fit middle, default).
      expect(typeof rec.truncated).toBe('boolean');
      expect(rec.prompt_tokens as number).toBeGreaterThan(0);
      // Fitting (reply room 6 of a 256-token context): shortened exactly when prompt + reply would not fit; the kept
      // prompt then fits, and an untouched one keeps every token.
      const full = rec.prompt_tokens as number;
      const kept = rec.kept_tokens as number;
      expect(rec.truncated).toBe(full + 6 > 256);
      expect(kept + 6).toBeLessThanOrEqual(256);
      expect(kept).toBe(rec.truncated ? Math.min(kept, full - 1) : full);
    }
    expect((JSON.parse(readFileSync(join(out, 'run.json'), 'utf8')) as { fit: string }).fit).toBe('middle');
    for (const f of ['summary.json', 'summary.csv', 'summary.md', 'run.json']) expect(existsSync(join(out, f))).toBe(true);
    expect(readFileSync(join(out, 'summary.md'), 'utf8')).toMatch(/xstest-safe \| was \| over-refusal/);
  }, 60_000);

  it('--batch and --prefix-memory change no record; a bad --prefix-memory is refused by name', () => {
    const out = join(root, 'run-nocarry');
    const r = lab([...evalArgs(out), '--batch', '3', '--prefix-memory', '0']);
    expect(r.status, r.stderr).toBe(0);
    expect(lines(join(out, 'records.jsonl')).map(stable)).toEqual(lines(first.records).map(stable));
    const bad = lab([...evalArgs(join(root, 'run-bad')), '--prefix-memory', 'lots']);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/--prefix-memory must be a whole number in 0\.\.1048576, got "lots"/);
  }, 60_000);

  it('an eval killed mid-run resumes with no lost or duplicate rows and the same summary', async () => {
    const out = join(root, 'run-b');
    const file = join(out, 'records.jsonl');
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...evalArgs(out)], { stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    let killedAt = -1;
    for (let i = 0; i < 6000 && killedAt < 0; i++) {
      await new Promise((r) => setTimeout(r, 5));
      if (existsSync(file)) {
        const n = readFileSync(file, 'utf8').split('\n').length - 1;
        if (n >= 3) {
          child.kill('SIGKILL');
          killedAt = n;
        }
      }
    }
    await exited;
    expect(killedAt).toBeGreaterThanOrEqual(3);
    const partial = lines(file);
    expect(partial.length).toBeLessThan(24); // really interrupted

    const r = lab(evalArgs(out));
    expect(r.status).toBe(0);
    const resumed = JSON.parse(r.stdout) as typeof first;
    const a = lines(first.records);
    const b = lines(file);
    expect(b).toHaveLength(24);
    expect(new Set(b.map(keyOf)).size).toBe(24);
    const byKey = new Map(a.map((x) => [keyOf(x), stable(x)]));
    for (const x of b) expect(stable(x)).toEqual(byKey.get(keyOf(x)));
    expect(resumed.summary).toEqual(first.summary);
    const sa = JSON.parse(readFileSync(join(root, 'run-a', 'summary.json'), 'utf8')) as unknown;
    const sb = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as unknown;
    expect(sb).toEqual(sa);
  }, 90_000);

  // Error paths run in-process (the command's function): the same code without a process start each.
  it('clear errors: missing controller, unknown condition or dataset, other settings in a run folder', async () => {
    const base = { model: built.dir, dataset: ['toxicchat-test'], n: '2', seed: '0', maxNewTokens: '2', judge: 'was-keywords' };
    await expect(runEvalCommand({ ...base, conditions: 'base,was', direction: dirFile, out: join(root, 'e1') }, false)).rejects.toThrow(/condition 'was' needs --controller/);
    await expect(runEvalCommand({ ...base, conditions: 'base,steer', out: join(root, 'e2') }, false)).rejects.toThrow(/unknown condition 'steer'/);
    await expect(runEvalCommand({ ...base, dataset: ['nope'], conditions: 'base', out: join(root, 'e3') }, false)).rejects.toThrow(/unknown dataset 'nope'/);
    await expect(runEvalCommand({ ...base, conditions: 'base', judge: 'gpt', out: join(root, 'e3') }, false)).rejects.toThrow(/unknown refusal judge 'gpt'/);
    const again = {
      model: built.dir, dataset: ['toxicchat-test', 'xstest-safe'], n: '4', seed: '3', conditions: 'base,uniform,was',
      direction: dirFile, controller: ctrlFile, maxNewTokens: '5', judge: 'was-keywords', out: join(root, 'run-a'),
    };
    await expect(runEvalCommand(again, false)).rejects.toThrow(/holds a run that this command cannot continue without mixing results: max new tokens: the run has 6, this command 5/);
  }, 60_000);

  it('a controller or direction for another model is refused', async () => {
    const other = await buildTestModel(join(root, 'other'), { shape: { ...SHAPE_PRESETS.tiny!, numLayers: 3 }, topology: 'plain', seed: 2 });
    const base = { model: other.dir, dataset: ['toxicchat-test'], n: '1', seed: '0', maxNewTokens: '2', judge: 'was-keywords', conditions: 'base', out: join(root, 'e5') };
    await expect(runEvalCommand({ ...base, controller: ctrlFile }, false)).rejects.toThrow(/made for another model.*4 layer weights but the model has 3 layers/);
    await expect(runEvalCommand({ ...base, direction: dirFile }, false)).rejects.toThrow(/has 4 layers, but the loaded model .* has 3/);
  }, 60_000);
});
