/**
 * The method's flow on a built tiny model: for every policy, the matrix the flow applies equals steeringMatrix(...)
 * of the residual it observed; that residual is the last prompt token's unsteered residual (same as a full forward,
 * i.e. what train-controller caches); the generated text equals a generation given that matrix directly; the
 * controller reads rows l+1 of its input layers.
 */
import { decoderLayer, residualIndex } from '../../src/core/model/layer-index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { loadSteerableModel, type SteerableModel } from '../../src/core/model/index.js';
import { ControllerForward } from '../../src/core/controller/forward.js';
import { initControllerParams } from '../../src/core/controller/params.js';
import { controllerInputLayers } from '../../src/core/controller/layers.js';
import { steeringMatrix, type SteeringPolicy } from '../../src/core/steering/policies.js';
import { normalize } from '../../src/core/steering/vector.js';
import { controllerInput, policyMatrix, runFlow, type MethodController } from '../../src/core/method/flow.js';
import { controllerActivations, lastTokenResidual } from '../../src/core/method/activations.js';

const shape = SHAPE_PRESETS.tiny!;
const L = shape.numLayers;
const H = shape.hiddenSize;
const root = mkdtempSync(join(tmpdir(), 'steerlab-method-flow-'));
let model: SteerableModel;
let controller: MethodController;
const direction = normalize(Float32Array.from({ length: H }, (_, i) => Math.sin(i + 1)));
const PROMPT = 'How do I pick a lock?';

beforeAll(async () => {
  const b = await buildTestModel(join(root, 'm'), { shape, topology: 'plain', seed: 21 });
  model = await loadSteerableModel(b.dir, { dtype: 'fp32', modelFileName: b.modelFileName });
  const inputLayers = controllerInputLayers(L);
  const params = initControllerParams({ inputSize: inputLayers.length * H, hiddenWidth: 16, numLayers: L }, 3);
  controller = { network: new ControllerForward(params), inputLayers };
});
afterAll(async () => {
  await model?.dispose();
  rmSync(root, { recursive: true, force: true });
});

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('runFlow', () => {
  it('observes the unsteered last-prompt-token residual, the one train-controller caches', async () => {
    const r = await runFlow(model, PROMPT, { direction, controller }, { policy: { kind: 'off' }, maxNewTokens: 2 });
    const full = await lastTokenResidual(model, PROMPT);
    expect(r.promptResidual).not.toBeNull();
    expect(maxAbs(r.promptResidual!, full)).toBeLessThan(1e-4);
    // base still records what the controller would have said, and applies no patch
    expect(r.scale).not.toBeNull();
    expect(r.matrix).toBeNull();
    expect(r.rowNorms).toBeNull();
    // the cached controller row is rows l+1 of the input layers
    const [row] = [await controllerActivations(model, [PROMPT], controller.inputLayers)];
    const l0 = controller.inputLayers[0]!;
    expect(maxAbs(row!.subarray(0, H), full.subarray((l0 + 1) * H, (l0 + 2) * H))).toBe(0);
    expect(maxAbs(controllerInput(full, controller.inputLayers, L, H), row!)).toBe(0);
  });

  const vector = Float32Array.from({ length: H }, (_, i) => 0.3 * Math.cos(i));
  const policies: SteeringPolicy[] = [
    { kind: 'was', alpha: 2 },
    { kind: 'uniform', alpha: 3 },
    { kind: 'manual', scale: 4, layerWeights: [0.1, 0.9, 0.5, 0.2], enabledLayers: [true, false, true, true] },
    { kind: 'actadd', vector, layer: decoderLayer(1), coefficient: 2 },
    { kind: 'cast', condition: { vector: direction, layer: residualIndex(2), threshold: -1, activeWhen: 'above' }, strength: 5 },
  ];
  for (const policy of policies) {
    it(`${policy.kind}: matrix = steeringMatrix(policy, observed residual); text = generation with that matrix`, async () => {
      const r = await runFlow(model, PROMPT, { direction, controller }, { policy, maxNewTokens: 6 });
      const res = r.promptResidual!;
      const out = controller.network.predict(controllerInput(res, controller.inputLayers, L, H));
      const expected = steeringMatrix(policy, {
        numLayers: L,
        hiddenSize: H,
        direction,
        prediction: { scale: out.scale, layerWeights: out.layerWeights },
        promptActivation: res.slice(2 * H, 3 * H),
      });
      expect(expected).not.toBeNull();
      expect(maxAbs(r.matrix!, expected!)).toBe(0);
      expect(r.scale).toBeCloseTo(out.scale, 6);
      expect(r.rowNorms).toHaveLength(L);
      const direct = await model.generate({ inputIds: model.formatChat(PROMPT).ids, maxNewTokens: 6, steering: expected });
      expect(r.tokenIds).toEqual(direct.tokenIds);
      expect(r.text).toBe(direct.text);
      expect(r.timings.observe_ms).not.toBeNull();
    });
  }

  it('cast whose condition does not hold applies no patch and matches the unsteered text', async () => {
    const policy: SteeringPolicy = { kind: 'cast', condition: { vector: direction, layer: residualIndex(2), threshold: 2, activeWhen: 'above' } };
    const r = await runFlow(model, PROMPT, { direction, controller: null }, { policy, maxNewTokens: 6 });
    expect(r.cast?.active).toBe(false);
    expect(r.matrix).toBeNull();
    const base = await runFlow(model, PROMPT, {}, { policy: { kind: 'off' }, maxNewTokens: 6 });
    expect(r.tokenIds).toEqual(base.tokenIds);
    expect(base.promptResidual).toBeNull(); // nothing needed the observation
  });

  it('a strong patch changes the text (the patch really reaches generation)', async () => {
    const base = await runFlow(model, PROMPT, {}, { policy: { kind: 'off' }, maxNewTokens: 6 });
    const r = await runFlow(model, PROMPT, { direction }, { policy: { kind: 'manual', scale: 200, layerWeights: [1, 1, 1, 1] }, maxNewTokens: 6 });
    expect(r.tokenIds).not.toEqual(base.tokenIds);
  });

  it('clear errors for missing parts', async () => {
    await expect(runFlow(model, PROMPT, { direction }, { policy: { kind: 'was' }, maxNewTokens: 2 })).rejects.toThrow(/needs a trained controller/);
    await expect(runFlow(model, PROMPT, { controller }, { policy: { kind: 'uniform' }, maxNewTokens: 2 })).rejects.toThrow(/needs a steering direction/);
    expect(() => policyMatrix({ kind: 'off' }, new Float32Array(3), { numLayers: L, hiddenSize: H, controller })).toThrow(/expected \[L\+1/);
  });
});
