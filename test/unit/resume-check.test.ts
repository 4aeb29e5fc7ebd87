import { describe, expect, it } from 'vitest';
import { checkResume, compareFingerprints, modelFingerprint, promptHash, ResumeMismatchError, type RunPlan } from '../../src/core/eval/resume-check.js';

const plan = async (over: Partial<RunPlan> = {}): Promise<RunPlan> => ({
  settings: { model_id: 'sha256:aaaa', seed: 0 },
  prompts: [{ dataset: 'd', id: '1', label: 'harmful', promptHash: await promptHash('hello') }],
  recordStamp: { model_id: 'sha256:aaaa' },
  ...over,
});

describe('checkResume', () => {
  it('accepts the same run and refuses another model identity, taken as an opaque string', async () => {
    const rec = { dataset: 'd', id: '1', condition: 'base', label: 'harmful', prompt_hash: await promptHash('hello'), model_id: 'sha256:aaaa' };
    const p = await plan();
    expect(() => checkResume('R', { settings: p.settings, records: [rec] }, p)).not.toThrow();
    const other = await plan({ settings: { model_id: 'sha256:bbbb', seed: 0 }, recordStamp: { model_id: 'sha256:bbbb' } });
    let err: unknown = null;
    try {
      checkResume('R', { settings: p.settings, records: [rec] }, other);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ResumeMismatchError);
    expect((err as ResumeMismatchError).differences).toEqual([
      'model identity: the run has "sha256:aaaa", this command "sha256:bbbb"',
      "record (dataset 'd', id '1', condition 'base') has model identity \"sha256:aaaa\", this command \"sha256:bbbb\"",
    ]);
    expect((err as Error).message).not.toContain('\n');
  });

  it('records without a prompt hash (older runs) and records of no planned prompt are refused, with or without a manifest', async () => {
    const p = await plan();
    expect(() => checkResume('R', { settings: null, records: [{ dataset: 'd', id: '1', condition: 'base', label: 'harmful', model_id: 'sha256:aaaa' }] }, p)).toThrow(
      /carries no prompt hash \(made by an older Steerlab\)/,
    );
    expect(() => checkResume('R', { settings: null, records: [{ dataset: 'd', id: '9', condition: 'base' }] }, p)).toThrow(/id '9'.*belongs to no prompt of this command/);
  });

  it('lists at most 8 differences and counts the rest', async () => {
    const p = await plan({ settings: Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`k${i}`, i])) });
    expect(() => checkResume('R', { settings: {}, records: [] }, p)).toThrow(/and 4 more\. Give another --out/);
  });
});

describe('model fingerprint', () => {
  const fake = (scale: number, noise = 0) => ({
    vocabSize: 100,
    forward: async (ids: number[][]) => ({ logits: { data: Float32Array.from({ length: ids[0]!.length * 100 }, (_, i) => scale * Math.sin(i) + noise * Math.cos(7 * i)) } }),
  });

  it('tolerates float noise between machines and catches other weights', async () => {
    const f = await modelFingerprint(fake(3));
    expect(f.ids).toHaveLength(16);
    expect(compareFingerprints(JSON.parse(JSON.stringify(f)), await modelFingerprint(fake(3, 1e-6)))).toBeNull();
    expect(compareFingerprints(f, await modelFingerprint(fake(3.01)))).toMatch(/other logits .* other weights/);
    expect(compareFingerprints(undefined, f)).toMatch(/no comparable model fingerprint/);
  });
});
