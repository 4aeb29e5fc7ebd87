/**
 * Controller file format: one safetensors file (shared reader/writer in ../steering/safetensors.ts).
 *
 *   __metadata__: { format: "steerlab-controller", version: "1", controller: JSON(ControllerMetadata) }
 *   fc1.weight [hidden_width, n_in]   fc1.bias [hidden_width]
 *   fc2.weight [1 + num_layers, hidden_width]   fc2.bias [1 + num_layers]
 *   input.mean [n_in], input.std [n_in]   (only when standardization = "per-feature")
 *
 * with n_in = input_layers.length * hidden_size. Tensor names and the [out, in] layout are PyTorch nn.Linear's (the
 * paper's SteeringController state dict), so `load_state_dict` reads the weights unchanged. Pure: no Node APIs (Node
 * file helpers are in node-io.ts).
 */
import { decodeSafetensors, encodeSafetensors, SafetensorsError, type SafetensorsTensor } from '../steering/safetensors.js';
import {
  checkExpectation,
  CONTROLLER_FORMAT,
  CONTROLLER_FORMAT_VERSION,
  ControllerFormatError,
  shapeFromMetadata,
  validateMetadata,
  type Controller,
  type ControllerExpectation,
} from './metadata.js';
import { outputSize, validateParams, validateStandardization, type ControllerParams } from './params.js';

const METADATA_KEY = 'controller';

/** [rows, cols] row-major -> [cols, rows] row-major. */
function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = a[o + c];
  }
  return out;
}

/** Serialises a controller to safetensors bytes (validates it first: a file is never written from bad numbers). */
export function encodeController(c: Controller): Uint8Array {
  const meta = validateMetadata(c.metadata);
  const shape = shapeFromMetadata(meta);
  const p = c.params;
  if (p.shape.inputSize !== shape.inputSize || p.shape.hiddenWidth !== shape.hiddenWidth || p.shape.numLayers !== shape.numLayers) {
    throw new ControllerFormatError(
      `controller parameters have shape ${JSON.stringify(p.shape)}, metadata says ${JSON.stringify(shape)}`,
    );
  }
  validateParams(p);
  if ((meta.standardization === 'per-feature') !== (c.standardization !== null)) {
    throw new ControllerFormatError(`metadata standardization is "${meta.standardization}" but statistics are ${c.standardization ? 'present' : 'absent'}`);
  }
  const O = outputSize(shape);
  const f32 = (shapeArr: number[], data: Float32Array): SafetensorsTensor => ({ dtype: 'F32', shape: shapeArr, data });
  const tensors: Record<string, SafetensorsTensor> = {
    'fc1.weight': f32([shape.hiddenWidth, shape.inputSize], transpose(p.w1, shape.inputSize, shape.hiddenWidth)),
    'fc1.bias': f32([shape.hiddenWidth], p.b1),
    'fc2.weight': f32([O, shape.hiddenWidth], transpose(p.w2, shape.hiddenWidth, O)),
    'fc2.bias': f32([O], p.b2),
  };
  if (c.standardization) {
    validateStandardization(c.standardization, shape.inputSize);
    tensors['input.mean'] = f32([shape.inputSize], c.standardization.mean);
    tensors['input.std'] = f32([shape.inputSize], c.standardization.std);
  }
  return encodeSafetensors(tensors, {
    format: CONTROLLER_FORMAT,
    version: String(CONTROLLER_FORMAT_VERSION),
    [METADATA_KEY]: JSON.stringify(meta),
  });
}

export interface DecodeControllerOptions {
  /** Refuse a controller made for another model (layer count, hidden size, optionally model id). */
  expect?: ControllerExpectation;
  /** Name for error messages (e.g. the file path). */
  source?: string;
}

/**
 * Parses and validates controller bytes: format and version, every metadata field, tensor names, shapes against the
 * metadata, finite weights, and (if given) that it fits the caller's model. Errors are ControllerFormatError.
 */
export function decodeController(bytes: Uint8Array, options: DecodeControllerOptions = {}): Controller {
  const source = options.source ?? 'controller file';
  if (!(bytes instanceof Uint8Array)) throw new ControllerFormatError(`${source}: expected the file contents as a Uint8Array`);
  // A Node Buffer's slice() is a view, not a copy, which breaks the shared reader's F32 copy: hand it a plain view.
  const plain = Object.getPrototypeOf(bytes) === Uint8Array.prototype ? bytes : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let decoded;
  try {
    decoded = decodeSafetensors(plain, { source });
  } catch (e) {
    if (e instanceof SafetensorsError) throw new ControllerFormatError(`not a valid controller file: ${e.message}`);
    throw e;
  }
  const md = decoded.metadata;
  if (md.format !== CONTROLLER_FORMAT) {
    throw new ControllerFormatError(
      `${source}: safetensors metadata "format" is ${JSON.stringify(md.format ?? null)}, expected "${CONTROLLER_FORMAT}" (not a controller file?)`,
    );
  }
  if (md.version !== String(CONTROLLER_FORMAT_VERSION)) {
    throw new ControllerFormatError(
      `${source}: controller format version ${JSON.stringify(md.version ?? null)} is not supported, this build reads version ${CONTROLLER_FORMAT_VERSION}`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(md[METADATA_KEY] ?? '');
  } catch (e) {
    throw new ControllerFormatError(`${source}: metadata "${METADATA_KEY}" is not valid JSON: ${(e as Error).message}`);
  }
  const meta = validateMetadata(raw, `${source} metadata`);
  checkExpectation(meta, options.expect, source);

  const shape = shapeFromMetadata(meta);
  const O = outputSize(shape);
  const expected: Record<string, number[]> = {
    'fc1.weight': [shape.hiddenWidth, shape.inputSize],
    'fc1.bias': [shape.hiddenWidth],
    'fc2.weight': [O, shape.hiddenWidth],
    'fc2.bias': [O],
  };
  if (meta.standardization === 'per-feature') {
    expected['input.mean'] = [shape.inputSize];
    expected['input.std'] = [shape.inputSize];
  }
  const t = decoded.tensors;
  for (const [name, want] of Object.entries(expected)) {
    const got = t[name];
    if (!got) throw new ControllerFormatError(`${source}: tensor "${name}" is missing (expected shape [${want.join(', ')}])`);
    if (got.shape.length !== want.length || got.shape.some((d, i) => d !== want[i])) {
      throw new ControllerFormatError(
        `${source}: tensor "${name}" has shape [${got.shape.join(', ')}], expected [${want.join(', ')}] from the metadata ` +
          `(${meta.input_layers.length} input layers x hidden size ${meta.hidden_size}, hidden width ${meta.hidden_width}, ${meta.num_layers} layers)`,
      );
    }
  }
  const extra = Object.keys(t).filter((k) => !(k in expected));
  if (extra.length) throw new ControllerFormatError(`${source}: unexpected tensors ${extra.map((k) => `"${k}"`).join(', ')}`);

  const params: ControllerParams = {
    shape,
    w1: transpose(t['fc1.weight'].data, shape.hiddenWidth, shape.inputSize),
    b1: t['fc1.bias'].data,
    w2: transpose(t['fc2.weight'].data, O, shape.hiddenWidth),
    b2: t['fc2.bias'].data,
  };
  const standardization = meta.standardization === 'per-feature' ? { mean: t['input.mean'].data, std: t['input.std'].data } : null;
  try {
    validateParams(params);
    if (standardization) validateStandardization(standardization, shape.inputSize);
  } catch (e) {
    throw new ControllerFormatError(`${source}: ${(e as Error).message}`);
  }
  return { metadata: meta, params, standardization };
}
