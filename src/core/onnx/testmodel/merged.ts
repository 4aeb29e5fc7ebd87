/**
 * The "merged" test decoder: old optimum `decoder_model_merged.onnx`. One `If` on the boolean input
 * `use_cache_branch` selects the with-past decoder (then-branch) or the no-past decoder (else-branch, which never
 * reads the past inputs). Both branches produce logits and present.* in the same order; every weight is an
 * initializer of the outer graph that both branches read from outer scope, as optimum's merger leaves them.
 *
 * transformers.js 4.3.1 (decoder_forward) feeds use_cache_branch = true exactly when a non-empty past is passed,
 * and on the first step feeds empty past tensors (past_sequence_length 0) that the else-branch ignores.
 */
import { DataType, GraphBuilder, attr } from '../graph-builder.js';
import { validateShape, type DecoderShape } from './config.js';
import {
  IO,
  PLAIN_OPSETS,
  addWeightInitializers,
  declareDecoderInputs,
  declareDecoderOutputs,
  emitDecoder,
  type BuiltGraph,
  type DecoderOutputNames,
} from './plain.js';
import type { DecoderWeights } from './weights.js';

export const USE_CACHE_BRANCH = 'use_cache_branch';
export const WITH_PAST_BRANCH = 'decoder_with_past';
export const NO_PAST_BRANCH = 'decoder_no_past';

/** Branch-local output names; the If node maps them by position onto the outer logits / present.* names. */
function branchOutputs(prefix: string): DecoderOutputNames {
  return {
    logits: `${prefix}/${IO.logits}`,
    presentKey: (l) => `${prefix}/${IO.presentKey(l)}`,
    presentValue: (l) => `${prefix}/${IO.presentValue(l)}`,
  };
}

export function buildMergedGraph(shape: DecoderShape, weights: DecoderWeights): BuiltGraph {
  validateShape(shape);
  const g = new GraphBuilder('main_graph');
  const io = declareDecoderInputs(g, shape);
  const useCacheBranch = g.input(USE_CACHE_BRANCH, DataType.BOOL, [1]);
  const w = addWeightInitializers(g, shape, weights);

  const withPast = new GraphBuilder(WITH_PAST_BRANCH, `${WITH_PAST_BRANCH}/`);
  const withPastOut = branchOutputs(WITH_PAST_BRANCH);
  emitDecoder(withPast, shape, w, io, withPastOut);
  declareDecoderOutputs(withPast, shape, withPastOut);

  const noPast = new GraphBuilder(NO_PAST_BRANCH, `${NO_PAST_BRANCH}/`);
  const noPastOut = branchOutputs(NO_PAST_BRANCH);
  emitDecoder(noPast, shape, w, { ...io, past: null }, noPastOut);
  declareDecoderOutputs(noPast, shape, noPastOut);

  const outer: DecoderOutputNames = { logits: IO.logits, presentKey: IO.presentKey, presentValue: IO.presentValue };
  const outNames = [outer.logits];
  for (let l = 0; l < shape.numLayers; l++) outNames.push(outer.presentKey(l), outer.presentValue(l));
  g.node('If', [useCacheBranch], outNames, {
    then_branch: attr.graph(withPast.graph()),
    else_branch: attr.graph(noPast.graph()),
  });
  declareDecoderOutputs(g, shape, outer);
  return { graph: g.graph(), opsets: PLAIN_OPSETS };
}
