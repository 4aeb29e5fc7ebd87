/**
 * Which layers feed the WAS controller, and how their residuals are concatenated.
 *
 * The paper (Hegazy et al., section 3) takes "every layer l with l >= 2/3 * N_layers". We read l as a decoder-layer index
 * 0..N-1 and the condition literally: l >= 2N/3, i.e. l >= ceil(2N/3). The paper hooks the *output* of decoder layer
 * l, which in this project's residual_stream indexing (index 0 = embeddings, index l+1 = output of layer l) is
 * residual index l+1. Examples: N=30 (SmolLM2-135M) -> layers 20..29 (10 layers, residual 21..30); N=16
 * (Llama-3.2-1B) -> 11..15 (5 layers); N=24 (Qwen2.5-0.5B) -> 16..23 (8 layers); N=32 -> 22..31 (10 layers).
 * The controller input is the concatenation, in ascending layer order, of the last-prompt-token residual of each
 * input layer (no pooling).
 */
import { decoderLayer, outputOf, type DecoderLayer, type ResidualIndex } from '../model/layer-index.js';

function checkLayerCount(numLayers: number): void {
  if (!Number.isInteger(numLayers) || numLayers <= 0) {
    throw new Error(`controller input layers: numLayers must be a positive integer, got ${numLayers}`);
  }
}

/**
 * First decoder layer that feeds the controller: ceil(2N/3), computed in integers to avoid rounding doubt. For N <= 2
 * the literal rule selects no layer at all, so the last layer is used instead.
 */
export function firstControllerInputLayer(numLayers: number): DecoderLayer {
  checkLayerCount(numLayers);
  return decoderLayer(Math.min(Math.floor((2 * numLayers + 2) / 3), numLayers - 1));
}

/** Decoder-layer indices l (0-based) with l >= 2/3 * numLayers, ascending: the paper's controller inputs. */
export function controllerInputLayers(numLayers: number): DecoderLayer[] {
  const first = firstControllerInputLayer(numLayers);
  const out: DecoderLayer[] = [];
  for (let l: number = first; l < numLayers; l++) out.push(decoderLayer(l));
  return out;
}

/** residual_stream index of the output of decoder layer l (index 0 is the embedding output). */
export function residualIndexOfLayerOutput(layer: DecoderLayer): ResidualIndex {
  return outputOf(layer);
}

/** Checks a caller-chosen input-layer list: non-empty, strictly ascending, each in 0..numLayers-1. */
export function validateInputLayers(inputLayers: readonly number[], numLayers: number): DecoderLayer[] {
  checkLayerCount(numLayers);
  if (!Array.isArray(inputLayers) || inputLayers.length === 0) {
    throw new Error('controller input layers: expected a non-empty list of decoder-layer indices');
  }
  for (let i = 0; i < inputLayers.length; i++) {
    const l = inputLayers[i];
    if (!Number.isInteger(l) || l < 0 || l >= numLayers) {
      throw new Error(`controller input layers: ${l} is not a decoder-layer index in 0..${numLayers - 1}`);
    }
    if (i > 0 && l <= inputLayers[i - 1]) {
      throw new Error(`controller input layers must be strictly ascending, got [${inputLayers.join(', ')}]`);
    }
  }
  return inputLayers.map((l) => decoderLayer(l));
}

/**
 * Builds one controller input row from per-layer residuals at the last prompt token: `residuals[i]` is the output of
 * decoder layer `inputLayers[i]` (hiddenSize values). Returns the concatenation [inputLayers.length * hiddenSize].
 */
export function concatControllerInput(residuals: readonly Float32Array[], hiddenSize: number): Float32Array {
  if (residuals.length === 0) throw new Error('controller input: expected at least one layer residual');
  const out = new Float32Array(residuals.length * hiddenSize);
  residuals.forEach((r, i) => {
    if (r.length !== hiddenSize) {
      throw new Error(`controller input: residual ${i} has ${r.length} values, expected hiddenSize ${hiddenSize}`);
    }
    out.set(r, i * hiddenSize);
  });
  return out;
}
