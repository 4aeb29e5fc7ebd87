/**
 * The controller's training rows and their seeded, stratified held-out split. No TensorFlow.js here: the LLM worker
 * builds and splits the rows (where the activations are read) and only the controller worker trains.
 */
import { SeededRandom } from './prng.js';

/** Cached activations: x row-major [rows, inputSize], labels[r] = 1 harmful / 0 benign (rows = labels.length). */
export interface ControllerDataset {
  x: Float32Array;
  labels: ArrayLike<number>;
  /** Per-row layer-weight targets [rows, numLayers] in [0, 1], NaN = none for that row ('learned' recipe only). */
  layerTargets?: Float32Array;
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

/** Checks layer-weight targets [rows, numLayers]: each in [0, 1] or NaN (no target); returns how many rows have one. */
export function validateLayerTargets(t: Float32Array | undefined, rows: number, numLayers: number, name: string): number {
  if (!(t instanceof Float32Array)) throw new Error(`${name}: the 'learned' layer-weights recipe needs layerTargets, a Float32Array of rows x ${numLayers}`);
  if (t.length !== rows * numLayers) throw new Error(`${name}: layerTargets has ${t.length} values, expected ${rows} rows x ${numLayers} layers`);
  let withTargets = 0;
  for (let r = 0; r < rows; r++) {
    const row = t.subarray(r * numLayers, (r + 1) * numLayers);
    const missing = row.every((v) => Number.isNaN(v));
    if (missing) continue;
    row.forEach((v, l) => {
      if (!(v >= 0 && v <= 1)) throw new Error(`${name}: layer-weight target of row ${r} layer ${l} is ${v}, expected a value in [0, 1] (or NaN for the whole row)`);
    });
    withTargets++;
  }
  if (withTargets === 0) throw new Error(`${name}: no row has layer-weight targets`);
  return withTargets;
}

/** Mean over rows with targets of (1/L) sum_l (w_l - t_l)^2: how close w is to its targets. */
export function layerTargetMse(weights: Float32Array, targets: Float32Array, numLayers: number): number | null {
  let sum = 0;
  let n = 0;
  for (let r = 0; r < targets.length / numLayers; r++) {
    if (Number.isNaN(targets[r * numLayers]!)) continue;
    let e = 0;
    for (let l = 0; l < numLayers; l++) e += (weights[r * numLayers + l]! - targets[r * numLayers + l]!) ** 2;
    sum += e / numLayers;
    n++;
  }
  return n ? sum / n : null;
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
  const L = d.layerTargets ? d.layerTargets.length / rows : 0;
  const gather = (idx: number[]): ControllerDataset => {
    idx.sort((a, b) => a - b);
    const x = new Float32Array(idx.length * inputSize);
    const labels = new Uint8Array(idx.length);
    const targets = d.layerTargets ? new Float32Array(idx.length * L) : null;
    idx.forEach((r, i) => {
      x.set(d.x.subarray(r * inputSize, (r + 1) * inputSize), i * inputSize);
      labels[i] = d.labels[r];
      if (targets) targets.set(d.layerTargets!.subarray(r * L, (r + 1) * L), i * L);
    });
    return targets ? { x, labels, layerTargets: targets } : { x, labels };
  };
  return { train: gather([...pos.train, ...neg.train]), validation: gather([...pos.val, ...neg.val]) };
}

