/**
 * External weight data is read only from inside the model's folder, or its hub repository (issue: a graph whose
 * tensors name `location: ../../any/file` made Steerlab read that file and use it as weights, where onnxruntime
 * itself refuses). Every path that resolves a location is tried: the loader (local folder, hub id), the weights
 * reader behind the embedding direction, and a symbolic link in the model folder that points out of it.
 */
import { copyFileSync, cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { env } from '@huggingface/transformers';
import { ModelProtoSchema, TensorProto_DataLocation } from 'onnx-buf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSteerableModel } from '../../src/core/model/load.js';
import { readEmbeddingMatrix, WeightsReaderError } from '../../src/core/onnx/weights-reader.js';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { startHubServer, type HubServer } from '../helpers/hub-server.js';

const shape = SHAPE_PRESETS.tiny!;
const root = mkdtempSync(join(tmpdir(), 'steerlab-extdata-'));
let ext: BuiltModel;
let hub: HubServer;

/** The graph bytes with every external-data location replaced by `location`. */
function relocated(graph: Uint8Array, location: string): Uint8Array {
  const m = fromBinary(ModelProtoSchema, graph);
  let n = 0;
  for (const t of m.graph!.initializer) {
    if (t.dataLocation !== TensorProto_DataLocation.EXTERNAL) continue;
    for (const e of t.externalData) if (e.key === 'location') (e.value = location), n++;
  }
  expect(n).toBeGreaterThan(0);
  return toBinary(ModelProtoSchema, m);
}

/** A copy of the external-data model whose graph names `location`. */
function variant(name: string, location: string): string {
  const dir = join(root, name, 'model');
  cpSync(ext.dir, dir, { recursive: true });
  writeFileSync(join(dir, 'onnx/model.onnx'), relocated(readFileSync(join(ext.dir, 'onnx/model.onnx')), location));
  // Where "../../secret.bin" lands from the graph's folder: real weights there, so reading it would load fine.
  copyFileSync(join(root, 'secret.bin'), join(root, name, 'secret.bin'));
  return dir;
}

async function loadError(id: string): Promise<Error & { code?: string }> {
  const err = await loadSteerableModel(id, { dtype: 'fp32' }).then(
    async (sm) => {
      await sm.dispose();
      return null;
    },
    (e: Error) => e,
  );
  expect(err, `loading ${id} should have been refused`).not.toBeNull();
  return err!;
}

beforeAll(async () => {
  ext = await buildTestModel(join(root, 'ext'), { shape, topology: 'plain', seed: 11, externalData: true });
  // The "secret" outside every model folder: a copy of real weights, so a load that reads it would succeed.
  copyFileSync(join(ext.dir, 'onnx/model.onnx_data'), join(root, 'secret.bin'));
  hub = await startHubServer({ 'steerlab-test/victim': ext.dir });
  env.remoteHost = hub.url;
  env.localModelPath = join(root, 'no-local-models');
}, 60_000);
afterAll(async () => {
  await hub?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('external data outside the model folder', () => {
  it('a location climbing out with .. is refused with a clear error', async () => {
    const dir = variant('dotdot', '../../secret.bin');
    const e = await loadError(dir);
    expect(e.code).toBe('EXTERNAL_DATA_OUTSIDE_MODEL');
    expect(e.message).toContain('onnx/model.onnx names external data at "../../secret.bin", which points outside the model folder (it climbs out with ..)');
  });

  it('an absolute location is refused', async () => {
    const dir = variant('absolute', join(root, 'secret.bin'));
    const e = await loadError(dir);
    expect(e.code).toBe('EXTERNAL_DATA_OUTSIDE_MODEL');
    expect(e.message).toMatch(/it is an absolute path/);
  });

  it('a symbolic link in the model folder pointing out of it is refused', async () => {
    const dir = join(root, 'symlink', 'model');
    cpSync(ext.dir, dir, { recursive: true });
    rmSync(join(dir, 'onnx/model.onnx_data'));
    symlinkSync(join(root, 'secret.bin'), join(dir, 'onnx/model.onnx_data'));
    const e = await loadError(dir);
    expect(e.message).toContain(`${join(dir, 'onnx/model.onnx_data')} resolves to ${join(root, 'secret.bin')}, outside the model folder`);
  });

  it('a hub repository cannot name a file of another repository', async () => {
    const evil = variant('evil', '../../../../victim/resolve/main/onnx/model.onnx_data');
    hub.addRepo('steerlab-test/evil', evil);
    hub.requests.length = 0;
    const e = await loadError('steerlab-test/evil');
    expect(e.code).toBe('EXTERNAL_DATA_OUTSIDE_MODEL');
    expect(hub.requests.filter((r) => !r.includes('/steerlab-test/evil/'))).toEqual([]);
  });

  it('the weights reader (embedding direction) refuses such a location before reading anything', async () => {
    const bytes = relocated(readFileSync(join(ext.dir, 'onnx/model.onnx')), '../outside.bin');
    const asked: string[] = [];
    const err = await readEmbeddingMatrix(bytes, {
      externalData: (loc) => {
        asked.push(loc);
        return readFileSync(join(root, 'secret.bin'));
      },
    }).then(() => null, (e: Error) => e);
    expect(err).toBeInstanceOf(WeightsReaderError);
    expect(err!.message).toMatch(/names external data at "\.\.\/outside\.bin", outside the model folder/);
    expect(asked).toEqual([]);
  });
});

