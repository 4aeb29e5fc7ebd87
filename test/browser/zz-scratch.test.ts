import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'vitest';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { launchChromium, openDebugPage, startLabServer } from './harness.js';

test('scratch', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'steerlab-dbg-'));
  await buildTestModel(join(tmp, 'm'), { shape: SHAPE_PRESETS.tiny!, topology: 'fused-q4f16', seed: 5 });
  await buildTestModel(join(tmp, 'p'), { shape: SHAPE_PRESETS.tiny!, topology: 'plain', seed: 5 });
  const server = await startLabServer({ '/test-models/': tmp });
  const s = await launchChromium({ webgpu: true });
  try {
    await openDebugPage(s, server.url);
    const q = { model: 'm', localModelPath: '/test-models/', allowRemoteModels: false, dtype: 'q4f16' };
    const p = { model: 'p', localModelPath: '/test-models/', allowRemoteModels: false, dtype: 'fp32' };
    for (const [req, device] of [[p, 'webgpu'], [q, 'wasm'], [p, 'wasm']] as const) {
      const r = await s.page.evaluate(([r, d]) => (window as any).steerlabDebug.load({ ...r, device: d }).then((x: any) => `ok ${x.info.device}`, (e: Error) => e.message.slice(0, 150)), [req, device] as const);
      console.log(req.model, device, '->', r);
    }
  } finally { await s.close(); await server.close(); }
}, 90000);
