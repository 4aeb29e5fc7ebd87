/**
 * How the loader moves model bytes (the load-time fixes of bench/load-profile.ts):
 * - Node, external data on local disk (model folder or the file cache): onnxruntime reads it there by folder, only the
 *   patched graph is served from memory, and the model is still exact (self-check, identity with the unpatched graph);
 *   external data only reachable over the network still goes through memory under the patched name.
 * - The custom cache answers without copying the registered bytes; downloads with a Content-Length are read into one
 *   buffer and rejected when longer or shorter; local files are read in blocks into one buffer.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env } from '@huggingface/transformers';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { checkIdentity, loadSteerableModel } from '../../src/core/model/index.js';
import { SteerlabCache } from '../../src/core/model/patched-cache.js';
import { externalDataLocations } from '../../src/core/model/external-data.js';
import { fetchModelFile, locateModelFile } from '../../src/core/model/fetch-file.js';
import { readLocalFile } from '../../src/core/model/node-io.js';
import { OnnxPatchError } from '../../src/core/onnx/patch-error.js';
import { startHubServer, type HubServer } from '../helpers/hub-server.js';

const shape = SHAPE_PRESETS.tiny!;
const root = mkdtempSync(join(tmpdir(), 'steerlab-model-load-io-'));
let ext: BuiltModel;
let inline: BuiltModel;
let hub: HubServer;
const saved = { remoteHost: env.remoteHost, localModelPath: env.localModelPath, useFSCache: env.useFSCache, cacheDir: env.cacheDir, fetch: env.fetch, allowLocalModels: env.allowLocalModels };

beforeAll(async () => {
  ext = await buildTestModel(join(root, 'ext'), { shape, topology: 'plain', seed: 11, externalData: true });
  inline = await buildTestModel(join(root, 'inline'), { shape, topology: 'plain', seed: 12 });
  hub = await startHubServer({ 'steerlab-test/tiny-ext': ext.dir });
});
afterAll(async () => {
  Object.assign(env, saved);
  await hub?.close();
  rmSync(root, { recursive: true, force: true });
});

/** The file names the loader put into the custom cache during `fn` (what was served from memory). */
async function registered<T>(fn: () => Promise<T>): Promise<{ value: T; files: string[] }> {
  const spy = vi.spyOn(SteerlabCache.prototype, 'register');
  try {
    const value = await fn();
    return { value, files: spy.mock.calls.map((c) => c[1]) };
  } finally {
    spy.mockRestore();
  }
}

describe('external data in Node', () => {
  it('a local folder: onnxruntime reads the data file by folder, only the patched graph comes from memory', async () => {
    expect(externalDataLocations(readFileSync(join(ext.dir, 'onnx/model.onnx')))).toEqual(['model.onnx_data']);
    const { value: sm, files } = await registered(() => loadSteerableModel(ext.dir, { dtype: 'fp32' }));
    try {
      expect(files).toEqual(['onnx/model_steerable.onnx']);
      expect(sm.selfCheck?.ok).toBe(true);
      expect(await checkIdentity(sm)).toBeLessThanOrEqual(1e-5);
    } finally {
      await sm.dispose();
    }
  });

  it('over the hub: the first load serves downloaded data from memory, the next reads the cached file by path', async () => {
    env.remoteHost = hub.url;
    env.localModelPath = join(root, 'no-local-models');
    env.useFSCache = true;
    env.cacheDir = join(root, 'cache');
    mkdirSync(env.cacheDir, { recursive: true });
    expect(await locateModelFile('steerlab-test/tiny-ext', 'onnx/model.onnx_data')).toBeNull();

    const first = await registered(() => loadSteerableModel('steerlab-test/tiny-ext', { dtype: 'fp32' }));
    const tokens = (await first.value.generate({ inputIds: [3, 5, 7], maxNewTokens: 5 })).tokenIds;
    await first.value.dispose();
    expect(first.files).toEqual(['onnx/model_steerable.onnx', 'onnx/model_steerable.onnx_data']);

    const cached = await locateModelFile('steerlab-test/tiny-ext', 'onnx/model.onnx_data');
    expect(cached).toBe(join(env.cacheDir, 'steerlab-test/tiny-ext/onnx/model.onnx_data'));
    const before = hub.requests.length;
    const second = await registered(() => loadSteerableModel('steerlab-test/tiny-ext', { dtype: 'fp32' }));
    try {
      expect(second.files).toEqual(['onnx/model_steerable.onnx']);
      expect(hub.requests.slice(before).filter((r) => r.includes('onnx_data'))).toEqual([]);
      expect(second.value.selfCheck?.ok).toBe(true);
      expect((await second.value.generate({ inputIds: [3, 5, 7], maxNewTokens: 5 })).tokenIds).toEqual(tokens);
    } finally {
      await second.value.dispose();
      Object.assign(env, saved);
    }
  });

  it('locateModelFile finds a local folder file and says null for one that is absent', async () => {
    expect(await locateModelFile(ext.dir, 'onnx/model.onnx_data')).toBe(join(ext.dir, 'onnx/model.onnx_data'));
    expect(await locateModelFile(ext.dir, 'onnx/nothing.onnx_data')).toBeNull();
  });

  it('an inline graph names no external data; bytes that are not a model are an OnnxPatchError', () => {
    expect(externalDataLocations(readFileSync(join(inline.dir, 'onnx/model.onnx')))).toEqual([]);
    expect(() => externalDataLocations(new Uint8Array([0xff, 0xff, 0xff]))).toThrow(OnnxPatchError);
  });
});

describe('no needless copies', () => {
  it('the custom cache hands out the registered bytes themselves, as often as asked', async () => {
    const cache = new SteerlabCache();
    const bytes = new Uint8Array(1000).map((_, i) => i % 251);
    const release = cache.register('/models/x', 'onnx/model_steerable.onnx', bytes);
    try {
      for (let i = 0; i < 3; i++) {
        const res = (await cache.match('/models/x/onnx/model_steerable.onnx')) as Response;
        expect(res).toBeInstanceOf(Response);
        expect(res.status).toBe(200);
        expect(res.headers.get('content-length')).toBe('1000');
        expect(await res.arrayBuffer()).toBe(bytes.buffer);
      }
      const streamed = await new Response((await cache.match('/models/x/onnx/model_steerable.onnx') as Response).body).arrayBuffer();
      expect(new Uint8Array(streamed)).toEqual(bytes);
      // A view into a larger buffer: the answer holds exactly the view's bytes.
      const view = bytes.subarray(10, 20);
      cache.register('/models/y', 'onnx/a.onnx', view)();
      const r2 = cache.register('/models/y', 'onnx/a.onnx', view);
      expect(new Uint8Array(await ((await cache.match('/models/y/onnx/a.onnx')) as Response).arrayBuffer())).toEqual(view);
      r2();
    } finally {
      release();
    }
    expect(await cache.match('/models/x/onnx/model_steerable.onnx')).toBeUndefined();
  });

  it('readLocalFile reads block by block into one buffer, with progress, and rejects a bad block size', async () => {
    const file = join(root, 'blocks.bin');
    const data = new Uint8Array(1003).map((_, i) => (i * 7) % 256);
    writeFileSync(file, data);
    const seen: number[] = [];
    const out = await readLocalFile(file, (loaded, total) => {
      expect(total).toBe(1003);
      seen.push(loaded);
    }, 100);
    expect(out).toEqual(data);
    expect(seen.length).toBe(11);
    expect(seen.at(-1)).toBe(1003);
    writeFileSync(join(root, 'empty.bin'), new Uint8Array(0));
    expect((await readLocalFile(join(root, 'empty.bin'))).byteLength).toBe(0);
    await expect(readLocalFile(file, undefined, 0)).rejects.toThrow(/blockSize must be a positive integer/);
  });

  it('a download is read into one buffer of its Content-Length and refused when longer or shorter', async () => {
    const body = new Uint8Array(300).map((_, i) => i % 256);
    let announced = 300;
    env.allowLocalModels = false;
    env.useFSCache = false;
    env.remoteHost = 'https://hub.invalid/';
    (env as { fetch: unknown }).fetch = async () =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(c) {
            for (let off = 0; off < body.length; off += 64) c.enqueue(body.slice(off, off + 64));
            c.close();
          },
        }),
        { status: 200, headers: { 'content-length': String(announced) } },
      );
    try {
      const progress: [number, number | null][] = [];
      const got = await fetchModelFile('org/model', 'onnx/model.onnx', { progress: (l, t) => progress.push([l, t]) });
      expect(got).toEqual(body);
      expect(got.buffer.byteLength).toBe(300);
      expect(progress.at(-1)).toEqual([300, 300]);
      announced = 200;
      await expect(fetchModelFile('org/model', 'onnx/model.onnx')).rejects.toThrow(/more than the 200 bytes Content-Length announced/);
      announced = 400;
      await expect(fetchModelFile('org/model', 'onnx/model.onnx')).rejects.toThrow(/cut short: got 300 bytes, Content-Length says 400/);
    } finally {
      Object.assign(env, saved);
    }
  });
});
