/**
 * The direction file: a safetensors file holding
 *   - "direction"      F32 [hidden]             the unit steering direction d (what WAS and the policies use);
 *   - "directions"     F32 [num_layers, hidden] optional, raw per-layer diff-in-means vectors, row l taken at the
 *                                               output of decoder layer l (residual index l + 1), aligned with the
 *                                               steering matrix's rows, for plots and per-layer choice;
 *   - "raw_direction"  F32 [hidden]             optional, the unnormalised vector d came from (ActAdd adds it raw);
 * and, in the safetensors metadata, format = "steerlab-direction", version, and "steerlab" = the JSON metadata below.
 * At least one of "direction" and "directions" must be present; with only "directions", metadata.layer picks the row.
 *
 * Importing a user's vector (safetensors, JSON, .npy) is direction-import.ts. Pure (no Node APIs); the Node
 * reader/writer with atomic writes is direction-file-node.ts.
 */
import { decoderLayer, layerBefore, outputOf, type DecoderLayer, type ResidualIndex } from '../model/layer-index.js';
import { recordedModelProblem, type ModelVariant } from '../model/model-id.js';
import { decodeSafetensors, encodeSafetensors, type SafetensorsTensor } from './safetensors.js';
import { checkVector, norm, normalize } from './vector.js';

export const DIRECTION_FORMAT = 'steerlab-direction';
export const DIRECTION_FORMAT_VERSION = 1;

export type DirectionMethod = 'embedding' | 'diff-in-means' | 'import';
export type SourceMatrix = 'unembedding' | 'input-embedding';

export interface DirectionMetadata {
  format: typeof DIRECTION_FORMAT;
  version: number;
  /** The model's identity (src/core/model/model-id.ts): hub id or a local folder's content hash. */
  model_id: string;
  /** Display name of that model (hub id or folder name); absent in files made before the identity rule. */
  model_name?: string;
  /** The graph the direction was computed with (dtype, file); loading another variant of the model warns. */
  model_variant?: ModelVariant;
  hidden_size: number;
  num_layers: number;
  method: DirectionMethod;
  /** Required for method 'embedding': which matrix's rows were averaged (paper: unembedding; released code: input). */
  source_matrix?: SourceMatrix;
  /** diff-in-means: steering row (output of decoder layer `layer`, residual index layer + 1) of the chosen vector. */
  layer?: DecoderLayer;
  /** diff-in-means: post-instruction position index (0 = first template token after the user's text). */
  position?: number;
  /** e.g. { harmful: 'advbench', harmless: 'alpaca' } */
  datasets?: Record<string, string>;
  /** e.g. { harmful_train: 128, harmless_train: 128, harmful_val: 32, harmless_val: 32 } */
  sample_counts?: Record<string, number>;
  seed?: number;
  /** ISO 8601 time of creation. */
  created_at: string;
  /** import: the user's file name, and the norm of the vector as given (before normalisation). */
  source_file?: string;
  source_norm?: number;
  note?: string;
}

export interface DirectionFile {
  metadata: DirectionMetadata;
  /** Unit direction [hidden]. */
  direction: Float32Array;
  /** Raw per-layer vectors [num_layers * hidden], row l at the output of layer l. */
  directions?: Float32Array;
  /** Raw vector behind `direction` [hidden]. */
  rawDirection?: Float32Array;
}

/** What the loaded model is, for the shape check (modelId only names it in messages). */
export interface ModelShape {
  hiddenSize: number;
  numLayers: number;
  modelId?: string;
}

const UNIT_TOLERANCE = 1e-3;
const METHODS: readonly DirectionMethod[] = ['embedding', 'diff-in-means', 'import'];
const SOURCE_MATRICES: readonly SourceMatrix[] = ['unembedding', 'input-embedding'];

function bad(source: string | undefined, message: string): never {
  throw new RangeError(source ? `${source}: ${message}` : message);
}

/** Validate metadata fields and types; returns a clean copy. */
export function validateDirectionMetadata(raw: unknown, source?: string): DirectionMetadata {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) bad(source, 'direction metadata must be a JSON object');
  const m = raw as Record<string, unknown>;
  if (m.format !== DIRECTION_FORMAT) bad(source, `metadata format is ${JSON.stringify(m.format)}, expected "${DIRECTION_FORMAT}"`);
  if (!Number.isSafeInteger(m.version) || (m.version as number) < 1) bad(source, `metadata version must be a positive integer, got ${JSON.stringify(m.version)}`);
  if ((m.version as number) > DIRECTION_FORMAT_VERSION) {
    bad(source, `direction file version ${m.version} is newer than this Steerlab reads (${DIRECTION_FORMAT_VERSION}); update Steerlab`);
  }
  if (typeof m.model_id !== 'string' || m.model_id.length === 0) bad(source, 'metadata model_id must be a non-empty string');
  const modelProblem = recordedModelProblem(m);
  if (modelProblem) bad(source, `metadata ${modelProblem}`);
  for (const k of ['hidden_size', 'num_layers'] as const) {
    if (!Number.isSafeInteger(m[k]) || (m[k] as number) <= 0) bad(source, `metadata ${k} must be a positive integer, got ${JSON.stringify(m[k])}`);
  }
  if (!METHODS.includes(m.method as DirectionMethod)) bad(source, `metadata method is ${JSON.stringify(m.method)}, expected one of ${METHODS.join(', ')}`);
  if (m.source_matrix !== undefined && !SOURCE_MATRICES.includes(m.source_matrix as SourceMatrix)) {
    bad(source, `metadata source_matrix is ${JSON.stringify(m.source_matrix)}, expected one of ${SOURCE_MATRICES.join(', ')}`);
  }
  if (m.method === 'embedding' && m.source_matrix === undefined) bad(source, "metadata source_matrix is required for method 'embedding'");
  const numLayers = m.num_layers as number;
  if (m.layer !== undefined && (!Number.isSafeInteger(m.layer) || (m.layer as number) < 0 || (m.layer as number) >= numLayers)) {
    bad(source, `metadata layer ${JSON.stringify(m.layer)} is out of range [0, ${numLayers})`);
  }
  if (m.position !== undefined && !Number.isSafeInteger(m.position)) bad(source, `metadata position must be an integer, got ${JSON.stringify(m.position)}`);
  if (m.seed !== undefined && !Number.isSafeInteger(m.seed)) bad(source, `metadata seed must be an integer, got ${JSON.stringify(m.seed)}`);
  if (typeof m.created_at !== 'string' || Number.isNaN(Date.parse(m.created_at))) bad(source, `metadata created_at must be an ISO 8601 time, got ${JSON.stringify(m.created_at)}`);
  const map = (k: string, type: 'string' | 'number') => {
    const v = m[k];
    if (v === undefined) return;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) bad(source, `metadata ${k} must be an object of ${type}s`);
    for (const [kk, vv] of Object.entries(v as Record<string, unknown>)) {
      if (typeof vv !== type || (type === 'number' && !Number.isFinite(vv))) bad(source, `metadata ${k}.${kk} must be a ${type}, got ${JSON.stringify(vv)}`);
    }
  };
  map('datasets', 'string');
  map('sample_counts', 'number');
  if (m.source_file !== undefined && typeof m.source_file !== 'string') bad(source, 'metadata source_file must be a string');
  if (m.source_norm !== undefined && !Number.isFinite(m.source_norm)) bad(source, 'metadata source_norm must be a finite number');
  if (m.note !== undefined && typeof m.note !== 'string') bad(source, 'metadata note must be a string');
  return JSON.parse(JSON.stringify(m)) as DirectionMetadata;
}

function checkUnit(v: Float32Array, what: string, source?: string): void {
  const n = norm(v);
  if (Math.abs(n - 1) > UNIT_TOLERANCE) bad(source, `${what} must be a unit vector, its norm is ${n}`);
}

/** Check tensors against the metadata; fills `direction` from `directions[layer]` when only per-layer vectors exist. */
function assemble(
  metadata: DirectionMetadata,
  t: { direction?: Float32Array; directions?: Float32Array; rawDirection?: Float32Array },
  source?: string,
): DirectionFile {
  const H = metadata.hidden_size;
  const L = metadata.num_layers;
  const wrap = (f: () => Float32Array) => {
    try {
      return f();
    } catch (e) {
      bad(source, (e as Error).message);
    }
  };
  const directions = t.directions && wrap(() => checkVector(t.directions!, L * H, `"directions" (num_layers ${L} x hidden_size ${H})`));
  const rawDirection = t.rawDirection && wrap(() => checkVector(t.rawDirection!, H, '"raw_direction" (hidden_size)'));
  let direction: Float32Array;
  if (t.direction) {
    direction = wrap(() => checkVector(t.direction!, H, '"direction" (hidden_size)'));
    checkUnit(direction, '"direction"', source);
  } else if (directions) {
    if (metadata.layer === undefined) bad(source, 'the file has per-layer "directions" but no "direction" and no metadata layer to choose one');
    const l = metadata.layer;
    direction = wrap(() => normalize(directions.subarray(l * H, (l + 1) * H), `"directions" row ${l}`));
  } else {
    bad(source, 'the file has neither a "direction" [hidden] nor a "directions" [num_layers, hidden] tensor');
  }
  return { metadata, direction, ...(directions ? { directions } : {}), ...(rawDirection ? { rawDirection } : {}) };
}

/** Serialise a direction file (validated first). */
export function encodeDirectionFile(file: DirectionFile): Uint8Array {
  const metadata = validateDirectionMetadata(file.metadata);
  const checked = assemble(metadata, { direction: file.direction, directions: file.directions, rawDirection: file.rawDirection });
  const H = metadata.hidden_size;
  const tensors: Record<string, SafetensorsTensor> = { direction: { dtype: 'F32', shape: [H], data: checked.direction } };
  if (checked.directions) tensors.directions = { dtype: 'F32', shape: [metadata.num_layers, H], data: checked.directions };
  if (checked.rawDirection) tensors.raw_direction = { dtype: 'F32', shape: [H], data: checked.rawDirection };
  return encodeSafetensors(tensors, {
    format: DIRECTION_FORMAT,
    version: String(metadata.version),
    steerlab: JSON.stringify(metadata),
  });
}

/** True when safetensors metadata marks a Steerlab direction file. */
export function isDirectionFile(meta: Record<string, string>): boolean {
  return meta.format === DIRECTION_FORMAT;
}

/**
 * Parse a direction file. With `model`, also checks it fits (see checkDirectionFits). `source` names the file in
 * errors.
 */
export function decodeDirectionFile(bytes: Uint8Array, model?: ModelShape, source?: string): DirectionFile {
  const { tensors, metadata: meta } = decodeSafetensors(bytes, { source });
  if (!isDirectionFile(meta)) bad(source, `not a Steerlab direction file (safetensors metadata format is ${JSON.stringify(meta.format)}, expected "${DIRECTION_FORMAT}"); use importDirection for other files`);
  if (meta.steerlab === undefined) bad(source, 'direction file has no "steerlab" metadata entry');
  let parsed: unknown;
  try {
    parsed = JSON.parse(meta.steerlab);
  } catch (e) {
    bad(source, `"steerlab" metadata is not valid JSON: ${(e as Error).message}`);
  }
  const metadata = validateDirectionMetadata(parsed, source);
  const H = metadata.hidden_size;
  const L = metadata.num_layers;
  const expectShape = (name: string, shape: number[]) => {
    const t = tensors[name];
    if (!t) return undefined;
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      bad(source, `tensor "${name}" has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}] from the metadata (hidden_size ${H}, num_layers ${L})`);
    }
    return t.data;
  };
  const extra = Object.keys(tensors).filter((k) => !['direction', 'directions', 'raw_direction'].includes(k));
  if (extra.length > 0) bad(source, `unexpected tensors ${extra.map((k) => `"${k}"`).join(', ')}; a direction file holds "direction", "directions" and "raw_direction" only`);
  const file = assemble(
    metadata,
    { direction: expectShape('direction', [H]), directions: expectShape('directions', [L, H]), rawDirection: expectShape('raw_direction', [H]) },
    source,
  );
  if (model) checkDirectionFits(file, model, source);
  return file;
}

/**
 * Throws when the direction was made for another shape of model (hidden size or layer count). Which model it was
 * made for is checked against the model identity by src/core/method/artifacts.ts checkDirectionFor. Returns no
 * warnings today (kept as a list for callers that show them).
 */
export function checkDirectionFits(file: DirectionFile, model: ModelShape, source?: string): string[] {
  const m = file.metadata;
  const made = `made for ${m.model_id}`;
  if (m.hidden_size !== model.hiddenSize || file.direction.length !== model.hiddenSize) {
    bad(source, `direction ${made} has hidden size ${m.hidden_size}, but the loaded model${model.modelId ? ` ${model.modelId}` : ''} has hidden size ${model.hiddenSize}`);
  }
  if (m.num_layers !== model.numLayers) {
    bad(source, `direction ${made} has ${m.num_layers} layers, but the loaded model${model.modelId ? ` ${model.modelId}` : ''} has ${model.numLayers}`);
  }
  return [];
}

// ---------------------------------------------------------------- building files from the two methods

export interface BuildOptions {
  modelId: string;
  /** Display name and variant of the model (SteerableModel.identity), recorded beside its id. */
  modelName?: string;
  modelVariant?: ModelVariant;
  hiddenSize: number;
  numLayers: number;
  createdAt?: string;
  datasets?: Record<string, string>;
  sampleCounts?: Record<string, number>;
  seed?: number;
  note?: string;
}

function common(o: BuildOptions) {
  return {
    format: DIRECTION_FORMAT,
    version: DIRECTION_FORMAT_VERSION,
    model_id: o.modelId,
    ...(o.modelName !== undefined ? { model_name: o.modelName } : {}),
    ...(o.modelVariant !== undefined ? { model_variant: { ...o.modelVariant } } : {}),
    hidden_size: o.hiddenSize,
    num_layers: o.numLayers,
    created_at: o.createdAt ?? new Date().toISOString(),
    ...(o.datasets ? { datasets: o.datasets } : {}),
    ...(o.sampleCounts ? { sample_counts: o.sampleCounts } : {}),
    ...(o.seed !== undefined ? { seed: o.seed } : {}),
    ...(o.note !== undefined ? { note: o.note } : {}),
  } as const;
}

/** A direction file for an embedding direction (Eq. 7); `sourceMatrix` says which matrix's rows were averaged. */
export function embeddingDirectionFile(direction: Float32Array, sourceMatrix: SourceMatrix, o: BuildOptions): DirectionFile {
  const metadata = validateDirectionMetadata({ ...common(o), method: 'embedding', source_matrix: sourceMatrix });
  return assemble(metadata, { direction });
}

/**
 * A direction file for a selected diff-in-means candidate. `perLayer(k)` gives the raw candidate vector at residual
 * index k and the chosen position (e.g. (k) => candidateAt(c, k, position).vector); rows 1..numLayers become the
 * "directions" tensor so row l sits at the output of layer l, like the steering matrix. `selected.layer` is a
 * residual index; the file records the steering row, selected.layer - 1.
 */
export function diffInMeansDirectionFile(
  selected: { layer: ResidualIndex; position: number; vector: Float32Array; direction: Float32Array },
  perLayer: ((k: ResidualIndex) => Float32Array) | null,
  o: BuildOptions,
): DirectionFile {
  const { hiddenSize: H, numLayers: L } = o;
  const row = layerBefore(selected.layer, L);
  let directions: Float32Array | undefined;
  if (perLayer) {
    directions = new Float32Array(L * H);
    for (let l = 0; l < L; l++) {
      const k = outputOf(decoderLayer(l));
      directions.set(checkVector(perLayer(k), H, `diff-in-means vector at residual index ${k}`), l * H);
    }
  }
  const metadata = validateDirectionMetadata({ ...common(o), method: 'diff-in-means', layer: row, position: selected.position });
  return assemble(metadata, { direction: selected.direction, rawDirection: selected.vector, ...(directions ? { directions } : {}) });
}
