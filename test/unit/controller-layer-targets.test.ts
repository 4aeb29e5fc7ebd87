/**
 * Layer weights that learn: with the 'learned' recipe the controller's w recovers per-layer targets planted in
 * synthetic data (harmful rows: targets that depend on the activation; benign rows: 0), on held-out rows; the paper's
 * recipe, trained on the same data, does not. Bad targets are refused by name; the recipe is in the metadata.
 */
import { describe, expect, it } from 'vitest';
import {
  ControllerNetwork,
  layerTargetMse,
  splitControllerDataset,
  syntheticActivations,
  trainController,
  validateMetadata,
  type ControllerDataset,
  type LayerTargetInfo,
} from '../../src/core/controller/index.js';

const L = 6;
const inputSize = 64;
const model = { modelId: 'toy-6x32', numLayers: L, hiddenSize: 32 };
const INFO: LayerTargetInfo = {
  method: 'least-refusal-patch', criterion: { kind: 'first-token', margin: 0 }, grid: [1, 0.5, 0.25, 0], refusal_token_ids: [1], positions: 'last', alpha: 2,
  order: 'least-uniform-gain, then last-to-first', benign_target: 0, harmful_rows: 0, refused_unpatched: 0, turned_by_patch: 0, no_target: 0, mean_uniform_gain: null, probes: 0,
};

/** Harmful rows: t_l = 0.5 + 0.45 tanh(x . v_l / 4) with fixed random v_l (a different pattern per layer); benign 0. */
function planted(rows: number, seed: number): ControllerDataset {
  const d = syntheticActivations({ rows, inputSize, separation: 0.6, seed });
  const v = Array.from({ length: L }, (_, l) => Float32Array.from({ length: inputSize }, (_, j) => Math.sin(j * (l + 1) * 0.77 + l)));
  const t = new Float32Array(rows * L);
  for (let r = 0; r < rows; r++) {
    for (let l = 0; l < L; l++) {
      if (!d.labels[r]) continue;
      let dot = 0;
      for (let j = 0; j < inputSize; j++) dot += d.x[r * inputSize + j]! * v[l]![j]!;
      t[r * L + l] = 0.5 + 0.45 * Math.tanh(dot / 4);
    }
  }
  return { ...d, layerTargets: t };
}

const opts = { ...model, hiddenWidth: 64, learningRate: 3e-3, epochs: 25, batchSize: 8, seed: 3 };

describe("the 'learned' layer-weights recipe", () => {
  it('recovers planted per-layer targets on held-out rows; the paper recipe does not', async () => {
    const { train, validation } = splitControllerDataset(planted(600, 5), inputSize, 0.25, 5);
    expect(validation.layerTargets).toHaveLength(validation.labels.length * L);
    const learned = await trainController(train, { ...opts, validation, layerWeights: 'learned', layerTargetInfo: INFO });
    const paper = await trainController(train, { ...opts, validation });
    const mse = async (c: typeof learned) => {
      const net = new ControllerNetwork(c.params, c.standardization);
      try {
        return layerTargetMse(net.predictBatch(validation.x, validation.labels.length).layerWeights, validation.layerTargets!, L)!;
      } finally {
        net.dispose();
      }
    };
    const mLearned = await mse(learned);
    const mPaper = await mse(paper);
    console.info(`held-out w MSE to planted targets: learned ${mLearned.toFixed(4)}, paper ${mPaper.toFixed(4)}`);
    expect(mLearned).toBeLessThan(0.01);
    expect(mPaper).toBeGreaterThan(5 * mLearned);
    expect(learned.metadata.metrics.epochs.at(-1)!.val_layer_weight_mse).toBeCloseTo(mLearned, 6);
    // s still separates the classes
    expect(learned.metadata.metrics.held_out_accuracy).toBeGreaterThan(0.95);
    expect(learned.metadata.layer_weights).toEqual({ recipe: 'learned', loss_weight: 1, rows_with_targets: train.labels.length, targets: INFO });
    expect(paper.metadata.layer_weights).toEqual({ recipe: 'paper' });
    expect(validateMetadata(JSON.parse(JSON.stringify(learned.metadata)))).toBeTruthy();
  });

  it('rows without targets (NaN) get no w term; bad targets are refused by name', async () => {
    const d = planted(40, 2);
    const t = d.layerTargets!;
    t.fill(NaN, 0, L); // row 0 unsearched
    const c = await trainController(d, { ...opts, epochs: 1, layerWeights: 'learned', layerTargetInfo: INFO });
    expect(c.metadata.layer_weights).toMatchObject({ rows_with_targets: 39 });
    await expect(trainController({ ...d, layerTargets: undefined }, { ...opts, layerWeights: 'learned', layerTargetInfo: INFO })).rejects.toThrow(/needs layerTargets/);
    const bad = Float32Array.from(t);
    bad[L + 2] = 1.5;
    await expect(trainController({ ...d, layerTargets: bad }, { ...opts, layerWeights: 'learned', layerTargetInfo: INFO })).rejects.toThrow(/target of row 1 layer 2 is 1.5/);
    await expect(trainController(d, { ...opts, layerWeights: 'learned' })).rejects.toThrow(/needs layerTargetInfo/);
    await expect(trainController(d, { ...opts, layerWeights: 'both' as never })).rejects.toThrow(/layerWeights must be "paper" or "learned"/);
  });
});
