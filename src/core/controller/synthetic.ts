/**
 * Synthetic cached activations: two Gaussian clusters (harmful around +mu, benign around -mu, unit noise), for tests,
 * benchmarks and demos of the training loop without a language model. Seeded, so identical run to run.
 */
import type { ControllerDataset } from './train.js';
import { SeededRandom } from './prng.js';

export interface SyntheticOptions {
  rows: number;
  inputSize: number;
  /** Fraction of rows labelled harmful (default 0.5). */
  harmfulFraction?: number;
  /** Per-feature std of the cluster-centre offsets mu (default 0.3): larger separates the classes more. */
  separation?: number;
  /** Affine map applied to every feature after sampling (default 1, 0): mimics residuals' large, shifted scales. */
  scale?: number;
  offset?: number;
  seed?: number;
}

function gaussian(r: SeededRandom): number {
  let u = 0;
  while (u === 0) u = r.next();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r.next());
}

export function syntheticActivations(o: SyntheticOptions): ControllerDataset {
  const r = new SeededRandom(o.seed ?? 0, 'synthetic');
  const sep = o.separation ?? 0.3;
  const scale = o.scale ?? 1;
  const offset = o.offset ?? 0;
  const harmfulRows = Math.round(o.rows * (o.harmfulFraction ?? 0.5));
  const mu = new Float32Array(o.inputSize);
  for (let j = 0; j < o.inputSize; j++) mu[j] = gaussian(r) * sep;
  const x = new Float32Array(o.rows * o.inputSize);
  const labels = new Uint8Array(o.rows);
  // Interleave the classes so any prefix of the rows holds both.
  const order = new Uint32Array(o.rows);
  for (let i = 0; i < o.rows; i++) order[i] = i;
  r.shuffle(order);
  for (let i = 0; i < harmfulRows; i++) labels[order[i]] = 1;
  for (let row = 0; row < o.rows; row++) {
    const sign = labels[row] ? 1 : -1;
    for (let j = 0; j < o.inputSize; j++) x[row * o.inputSize + j] = (gaussian(r) + sign * mu[j]) * scale + offset;
  }
  return { x, labels };
}
