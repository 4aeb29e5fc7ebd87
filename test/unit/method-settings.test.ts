/** The lab's steering settings -> policies (src/core/method/settings.ts), done in the LLM worker. */
import { describe, expect, test } from 'vitest';
import {
  availability, conditionKind, defaultPolicySettings, policyFromSettings, policyUnavailable, POLICY_KINDS,
} from '../../src/core/method/settings.js';
import { CONDITION_NAMES } from '../../src/core/method/conditions.js';
import { residualIndex } from '../../src/core/model/layer-index.js';
import { diffInMeansDirectionFile, embeddingDirectionFile } from '../../src/core/steering/direction-file.js';
import { normalize } from '../../src/core/steering/vector.js';

const L = 3;
const H = 4;
const unit = normalize(Float32Array.from([1, 2, 3, 4]));
const embedding = embeddingDirectionFile(unit, 'unembedding', { modelId: 'm', hiddenSize: H, numLayers: L });
const raw = Float32Array.from([2, 4, 6, 8]);
const dim = diffInMeansDirectionFile(
  { layer: residualIndex(2), position: 1, vector: raw, direction: normalize(raw) },
  () => raw,
  { modelId: 'm', hiddenSize: H, numLayers: L },
);
const cast = { vector: unit, layer: residualIndex(1), threshold: 0.2, activeWhen: 'above' as const };

describe('policy settings', () => {
  test('what each policy needs, in words', () => {
    const none = availability({ direction: null, cast: null, hasController: false });
    expect(POLICY_KINDS.filter((k) => policyUnavailable(k, none) === null)).toEqual(['off']);
    expect(policyUnavailable('was', none)).toMatch(/needs a steering direction/);
    const withDirection = availability({ direction: embedding, cast: null, hasController: false });
    expect(policyUnavailable('was', withDirection)).toMatch(/needs a controller/);
    expect(policyUnavailable('manual', withDirection)).toBeNull();
    expect(policyUnavailable('actadd', withDirection)).toMatch(/difference-in-means direction/);
    expect(policyUnavailable('cast', withDirection)).toMatch(/CAST condition/);
    const all = availability({ direction: dim, cast, hasController: true });
    expect(POLICY_KINDS.filter((k) => policyUnavailable(k, all) !== null)).toEqual([]);
  });

  test('settings become the policies the CLI builds from its flags', () => {
    const s = { ...defaultPolicySettings(L), alpha: 14, manualScale: 0.5, manualWeights: [0.1, 0.2, 0.3], manualEnabled: [true, false, true], actaddCoefficient: 2, castStrength: 3 };
    const a = { direction: dim, cast, hasController: true };
    expect(policyFromSettings({ ...s, kind: 'off' }, a)).toEqual({ kind: 'off' });
    expect(policyFromSettings({ ...s, kind: 'was' }, a)).toEqual({ kind: 'was', alpha: 14 });
    expect(policyFromSettings({ ...s, kind: 'uniform' }, a)).toEqual({ kind: 'uniform', alpha: 14 });
    expect(policyFromSettings({ ...s, kind: 'manual' }, a)).toEqual({ kind: 'manual', scale: 0.5, layerWeights: [0.1, 0.2, 0.3], enabledLayers: [true, false, true], alpha: 14 });
    // ActAdd adds the RAW diff-in-means vector at the file's steering row (the CLI's default --actadd-layer).
    expect(policyFromSettings({ ...s, kind: 'actadd' }, a)).toEqual({ kind: 'actadd', vector: raw, layer: 1, coefficient: 2 });
    expect(policyFromSettings({ ...s, kind: 'cast' }, a)).toEqual({ kind: 'cast', condition: cast, strength: 3 });
    expect(() => policyFromSettings({ ...s, kind: 'was' }, { ...a, hasController: false })).toThrow(/policy 'was' needs a controller/);
  });

  test('evaluation conditions: base is the unpatched model', () => {
    expect(CONDITION_NAMES.map(conditionKind)).toEqual(['off', 'was', 'uniform', 'manual', 'actadd', 'cast']);
  });
});
