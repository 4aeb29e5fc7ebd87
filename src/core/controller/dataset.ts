/**
 * The controller's training rows and their seeded, stratified held-out split. No TensorFlow.js here: the LLM worker
 * builds and splits the rows (where the activations are read) and only the controller worker trains.
 */
import { SeededRandom } from './prng.js';

/** Cached activations: x row-major [rows, inputSize], labels[r] = 1 harmful / 0 benign (rows = labels.length). */
export interface ControllerDataset {
  x: Float32Array;
  labels: ArrayLike<number>;
}

/** Checks a dataset's shape, labels and values; returns its row count. */
export function validateDataset(d: ControllerDataset, inputSize: number, name: string): number {
  if (!d || !(d.x instanceof Float32Array)) throw new Error(`${name}: x must be a Float32Array of rows x ${inputSize}`);
  const rows = d.labels?.length ?? 0;
  if (rows < 1) throw new Error(`${name}: needs at least one labelled row`);
  if (d.x.length !== rows * inputSize) {
    throw new Error(
      `${name}: x has ${d.x.length} values, expected ${rows} rows (labels) x ${inputSize} (input layers x hidden size)`,
    );
  }
  for (let r = 0; r < rows; r++) {
    const y = d.labels[r];
    if (y !== 0 && y !== 1) throw new Error(`${name}: label of row ${r} is ${y}, expected 1 (harmful) or 0 (benign)`);
  }
  for (let i = 0; i < d.x.length; i++) {
    if (!Number.isFinite(d.x[i])) {
      throw new Error(`${name}: row ${Math.floor(i / inputSize)} feature ${i % inputSize} is ${d.x[i]}, expected a finite activation`);
    }
  }
  return rows;
}

/** Stratified, seeded split: about `fraction` of each class goes to validation. */
export function splitControllerDataset(
  d: ControllerDataset,
  inputSize: number,
  fraction: number,
  seed: number,
): { train: ControllerDataset; validation: ControllerDataset } {
  if (!(fraction > 0 && fraction < 1)) throw new Error(`validation fraction must be in (0, 1), got ${fraction}`);
  const rows = validateDataset(d, inputSize, 'dataset');
  const rand = new SeededRandom(seed, 'split');
  const pick = (label: number) => {
    const idx: number[] = [];
    for (let r = 0; r < rows; r++) if (d.labels[r] === label) idx.push(r);
    rand.shuffle(idx);
    const k = Math.round(idx.length * fraction);
    return { val: idx.slice(0, k), train: idx.slice(k) };
  };
  const pos = pick(1);
  const neg = pick(0);
  const gather = (idx: number[]): ControllerDataset => {
    idx.sort((a, b) => a - b);
    const x = new Float32Array(idx.length * inputSize);
    const labels = new Uint8Array(idx.length);
    idx.forEach((r, i) => {
      x.set(d.x.subarray(r * inputSize, (r + 1) * inputSize), i * inputSize);
      labels[i] = d.labels[r];
    });
    return { x, labels };
  };
  return { train: gather([...pos.train, ...neg.train]), validation: gather([...pos.val, ...neg.val]) };
}

