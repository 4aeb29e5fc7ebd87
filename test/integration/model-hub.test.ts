/**
 * Loading by hub id through a local hub-shaped server (env.remoteHost pointed at it): downloads with per-file
 * progress, the cache on the second load, external data renamed for the patched graph, and clear errors for a
 * missing model, a missing graph file and a download cut half-way.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env } from '@huggingface/transformers';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { checkIdentity, loadSteerableModel, ModelLoadError, type LoadProgress } from '../../src/core/model/index.js';
import { startHubServer, type HubServer } from '../helpers/hub-server.js';

const shape = SHAPE_PRESETS.tiny!;
const root = mkdtempSync(join(tmpdir(), 'steerlab-model-hub-'));
let hub: HubServer;
let plain: BuiltModel;
let ext: BuiltModel;

function freshCache(name: string): string {
  const dir = join(root, 'cache', name);
  mkdirSync(dir, { recursive: true });
  env.cacheDir = dir;
  return dir;
}

function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((d) => d.isFile()).map((d) => join(d.parentPath, d.name));
}

beforeAll(async () => {
  plain = await buildTestModel(join(root, 'plain'), { shape, topology: 'plain', seed: 3 });
  ext = await buildTestModel(join(root, 'ext'), { shape, topology: 'merged', seed: 4, externalData: true });
  hub = await startHubServer({ 'steerlab-test/tiny-plain': plain.dir, 'steerlab-test/tiny-ext': ext.dir });
  env.remoteHost = hub.url;
  env.localModelPath = join(root, 'no-local-models'); // hub ids must not be found locally
  env.useFSCache = true;
});
afterAll(async () => {
  await hub?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('loading through the hub', () => {
  it('downloads with per-file progress, patches, self-checks, then reuses the cache', async () => {
    const cacheDir = freshCache('a');
    const events: LoadProgress[] = [];
    const sm = await loadSteerableModel('steerlab-test/tiny-plain', { dtype: 'fp32', progress: (p) => events.push(p) });
    try {
      expect(sm.selfCheck?.ok).toBe(true);
      const size = statSync(join(plain.dir, 'onnx/model.onnx')).size;
      const graph = events.filter((e) => e.stage === 'download' && e.file === 'onnx/model.onnx');
      expect(graph.length).toBeGreaterThan(0);
      expect(graph.at(-1)).toMatchObject({ loaded: size, total: size, done: true, fromCache: false });
      expect(events.some((e) => e.stage === 'download' && e.file === 'tokenizer.json' && e.done)).toBe(true);
      expect(events.map((e) => e.stage)).toEqual(expect.arrayContaining(['patch', 'session', 'self-check', 'ready']));
      expect(hub.requests).toContain('GET /steerlab-test/tiny-plain/resolve/main/onnx/model.onnx');
      expect(hub.requests.some((r) => r.includes('_steerable'))).toBe(false); // the patched graph never leaves memory
      expect(filesUnder(cacheDir).some((f) => f.endsWith(join('steerlab-test', 'tiny-plain', 'onnx', 'model.onnx')))).toBe(true);
      const viaHub = await sm.generate({ inputIds: [4, 9, 16, 25], maxNewTokens: 6 });

      const local = await loadSteerableModel(plain.dir, { dtype: 'fp32' });
      expect((await local.generate({ inputIds: [4, 9, 16, 25], maxNewTokens: 6 })).tokenIds).toEqual(viaHub.tokenIds);
      await local.dispose();
    } finally {
      await sm.dispose();
    }

    const before = hub.requests.length;
    const again: LoadProgress[] = [];
    const sm2 = await loadSteerableModel('steerlab-test/tiny-plain', { dtype: 'fp32', progress: (p) => again.push(p) });
    await sm2.dispose();
    expect(hub.requests.slice(before).filter((r) => r.endsWith('onnx/model.onnx'))).toEqual([]);
    expect(again.some((e) => e.stage === 'download' && e.file === 'onnx/model.onnx' && e.fromCache)).toBe(true);
  });

  it('serves external data under the patched graph name (merged graph)', async () => {
    freshCache('ext');
    expect(existsSync(join(ext.dir, 'onnx/decoder_model_merged.onnx_data'))).toBe(true);
    const sm = await loadSteerableModel('steerlab-test/tiny-ext', { dtype: 'fp32' });
    try {
      expect(sm.modelFileName).toBe('decoder_model_merged');
      expect(sm.report.topology).toBe('merged');
      expect(sm.selfCheck?.ok).toBe(true);
      expect(hub.requests).toContain('GET /steerlab-test/tiny-ext/resolve/main/onnx/decoder_model_merged.onnx_data');
      expect(await checkIdentity(sm)).toBeLessThanOrEqual(1e-5);
    } finally {
      await sm.dispose();
    }
  });

  it('a missing hub id is a clear error', async () => {
    freshCache('missing');
    const err = await loadSteerableModel('steerlab-test/no-such-model', { dtype: 'fp32' }).catch((e) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect(err.code).toBe('MODEL_NOT_FOUND');
    expect(err.message).toContain('steerlab-test/no-such-model');
    expect(err.message).toMatch(/config\.json/);
  });

  it('a dtype whose graph is absent names the files it tried', async () => {
    freshCache('dtype');
    const err = await loadSteerableModel('steerlab-test/tiny-plain', { dtype: 'q4' }).catch((e) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect(err.code).toBe('MODEL_FILE_NOT_FOUND');
    expect(err.message).toContain('onnx/model_q4.onnx');
    expect(err.message).toContain('onnx/decoder_model_merged_q4.onnx');
  });

  it('a download cut half-way fails the load and leaves nothing half-written in the cache', async () => {
    const cacheDir = freshCache('cut');
    hub.setCut({ file: 'onnx/model.onnx', fraction: 0.5, times: 1 });
    try {
      const err = await loadSteerableModel('steerlab-test/tiny-plain', { dtype: 'fp32' }).catch((e) => e);
      expect(err).toBeInstanceOf(Error);
      expect(err.message).toMatch(/onnx\/model\.onnx/);
      expect(err.message).toMatch(/failed after \d+ of \d+ bytes|cut short/);
      expect(filesUnder(cacheDir).filter((f) => f.includes('model.onnx'))).toEqual([]);
    } finally {
      hub.setCut(null);
    }
    const sm = await loadSteerableModel('steerlab-test/tiny-plain', { dtype: 'fp32' });
    expect(sm.selfCheck?.ok).toBe(true);
    await sm.dispose();
  });
});
