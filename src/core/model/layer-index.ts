/**
 * Two kinds of layer number that are one apart and easy to mix up, as distinct types:
 *
 *   ResidualIndex  0..L   a position in the residual stream: 0 = the embedding output, k = the output of decoder
 *                         layer k - 1 (the patched graph's `residual_stream` [B, L+1, S, H] is indexed by it);
 *                         diff-in-means candidates and the CAST condition layer are residual indices.
 *   DecoderLayer   0..L-1 a decoder layer, and the row of the steering matrix added after it (row l lands in
 *                         residual index l + 1); controller input layers, the ActAdd row, CAST's behaviour layers
 *                         and a direction file's `layer` are decoder layers.
 *
 * Both are plain numbers at run time (JSON files keep storing numbers); the brands only stop one from being passed
 * where the other is expected. Make them with the checked constructors below, convert with outputOf / layerBefore.
 */
export type ResidualIndex = number & { readonly __brand: 'ResidualIndex' };
export type DecoderLayer = number & { readonly __brand: 'DecoderLayer' };

function checkInteger(v: number, what: string): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${what} must be a non-negative integer, got ${String(v)}`);
}

/** A residual index, checked against 0..numLayers when the layer count is given. */
export function residualIndex(k: number, numLayers?: number): ResidualIndex {
  checkInteger(k, 'residual index');
  if (numLayers !== undefined && k > numLayers) throw new RangeError(`residual index ${k} is out of range: expected 0..${numLayers} (0 = embeddings, k = output of decoder layer k-1)`);
  return k as ResidualIndex;
}

/** A decoder layer (steering row), checked against 0..numLayers-1 when the layer count is given. */
export function decoderLayer(l: number, numLayers?: number): DecoderLayer {
  checkInteger(l, 'decoder layer');
  if (numLayers !== undefined && l >= numLayers) throw new RangeError(`decoder layer ${l} is out of range: expected 0..${numLayers - 1}`);
  return l as DecoderLayer;
}

/** decoderLayer over a list. */
export function decoderLayers(list: readonly number[], numLayers?: number): DecoderLayer[] {
  return list.map((l) => decoderLayer(l, numLayers));
}

/** The residual index holding the output of decoder layer l: l + 1. */
export function outputOf(l: DecoderLayer): ResidualIndex {
  return (l + 1) as ResidualIndex;
}

/** The decoder layer whose output residual index k is (k - 1); index 0, the embedding output, has none. */
export function layerBefore(k: ResidualIndex, numLayers: number): DecoderLayer {
  if (!Number.isSafeInteger(k) || k < 1 || k > numLayers) {
    throw new RangeError(
      `residual index ${k} has no steering row: the patch adds after layers 0..${numLayers - 1}, i.e. residual indices 1..${numLayers} (index 0 is the embedding output)`,
    );
  }
  return (k - 1) as DecoderLayer;
}
