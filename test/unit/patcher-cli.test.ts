/** `npm run lab -- patch IN OUT [--json] [--layers N]`, run as a real process. */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { testDir } from '../helpers/tmp.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FIXTURE = join(ROOT, 'test/fixtures/onnx/tiny-qwen35-skipln-gqa-fp16.onnx');

function lab(...args: string[]) {
  return spawnSync(join(ROOT, 'node_modules/.bin/tsx'), ['src/cli/main.ts', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
}

describe('lab patch', () => {
  it('--json prints one report object and writes the model', () => {
    const dir = testDir('steerlab-cli-');
    const out = join(dir, 'steerable.onnx');
    const r = lab('patch', FIXTURE, out, '--json', '--layers', '2');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const report = JSON.parse(lines[0]);
    expect(report).toMatchObject({ topology: 'fused', num_layers: 2, hidden_size: 64, stream_dtype: 'float16' });
    expect(report.injection_points).toHaveLength(2);
    expect(readFileSync(out).length).toBeGreaterThan(readFileSync(FIXTURE).length);
  });

  it('--logits-from adds the head-limiting input, and only with the flag', async () => {
    const dir = testDir('steerlab-cli-');
    const withFlag = join(dir, 'with.onnx');
    const without = join(dir, 'without.onnx');
    const a = lab('patch', FIXTURE, withFlag, '--json', '--logits-from');
    const b = lab('patch', FIXTURE, without, '--json');
    expect(a.status, a.stderr).toBe(0);
    expect(b.status, b.stderr).toBe(0);
    expect(JSON.parse(a.stdout).logits_from_input).toBe('logits_from');
    expect(JSON.parse(b.stdout).logits_from_input).toBeNull();
    const ort = await import('onnxruntime-node');
    const sa = await ort.InferenceSession.create(withFlag);
    const sb = await ort.InferenceSession.create(without);
    try {
      expect(sa.inputNames).toContain('logits_from');
      expect(sb.inputNames).not.toContain('logits_from');
    } finally {
      await sa.release();
      await sb.release();
    }
    const text = lab('patch', FIXTURE, join(dir, 'text.onnx'), '--logits-from');
    expect(text.stdout).toMatch(/input logits_from int64 \[1\]/);
  });

  it('fails with a non-zero status, one line on stderr, and no output file', () => {
    const dir = testDir('steerlab-cli-');
    const out = join(dir, 'steerable.onnx');
    const r = lab('patch', FIXTURE, out, '--layers', '3');
    expect(r.status).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/LAYER_COUNT_MISMATCH: found 4 residual producers = 2 layers, config says 3/);
    expect(existsSync(out)).toBe(false);
    const bad = lab('patch', FIXTURE, out, '--layers', 'two');
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/--layers must be a whole number in 1..1024, got "two"/);
  });
});
