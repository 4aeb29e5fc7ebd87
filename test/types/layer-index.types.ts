/**
 * Compile-time checks (test/unit/layer-index.test.ts compiles this file): a residual index cannot be passed where a
 * decoder layer is expected, nor the other way round, nor a plain number where either is expected. Each
 * `@ts-expect-error` line must be an error; the test also compiles the file without them and counts the errors.
 */
import { controllerInput } from '../../src/core/method/flow.js';
import { decoderLayer, layerBefore, outputOf, residualIndex } from '../../src/core/model/layer-index.js';
import type { CastCondition } from '../../src/core/steering/cast.js';
import { candidateAt, type DiffInMeansCandidates } from '../../src/core/steering/diff-in-means.js';
import type { SteeringPolicy } from '../../src/core/steering/policies.js';

declare const residual: Float32Array;
declare const candidates: DiffInMeansCandidates;
const vector = new Float32Array(4);
const k = residualIndex(3, 4);
const l = decoderLayer(2, 4);

// Right kinds: fine.
controllerInput(residual, [l], 4, 4);
candidateAt(candidates, k, 0);
export const ok: SteeringPolicy[] = [
  { kind: 'actadd', vector, layer: l },
  { kind: 'actadd', vector, layer: layerBefore(k, 4) },
  { kind: 'cast', condition: { vector, layer: outputOf(l), threshold: 0, activeWhen: 'above' }, layers: [l] },
];

// @ts-expect-error a residual index is not a controller input (decoder) layer
controllerInput(residual, [k], 4, 4);
// @ts-expect-error a decoder layer is not a diff-in-means candidate's residual index
candidateAt(candidates, l, 0);
// @ts-expect-error ActAdd's layer is a steering row (decoder layer), not a residual index
export const wrongActAdd: SteeringPolicy = { kind: 'actadd', vector, layer: k };
// @ts-expect-error CAST's condition layer is a residual index, not a decoder layer
export const wrongCast: CastCondition = { vector, layer: l, threshold: 0, activeWhen: 'above' };
// @ts-expect-error a plain number must go through residualIndex() / decoderLayer()
export const plain: CastCondition = { vector, layer: 2, threshold: 0, activeWhen: 'above' };
