/**
 * Greedy decoding with the TensorFlow.js organism (whole prefix recomputed each step: the prompts are short), used
 * during training to watch behaviour on dev prompts and pick the checkpoint.
 */
import * as tf from '@tensorflow/tfjs';
import type { DecoderShape } from '../core/onnx/testmodel/config.js';
import { ENDOFTEXT_ID, IM_END_ID } from '../core/onnx/testmodel/tokenizer.js';
import { forwardLogits, type OrganismVariables } from './model.js';

export function greedyTfjs(shape: DecoderShape, p: OrganismVariables, promptIds: number[], maxNewTokens: number): number[] {
  const ids = promptIds.slice();
  const out: number[] = [];
  for (let t = 0; t < maxNewTokens && ids.length < shape.maxPositionEmbeddings; t++) {
    const next = tf.tidy(() => {
      const logits = forwardLogits(shape, p, tf.tensor2d(ids, [1, ids.length], 'int32'));
      return tf.argMax(tf.slice(logits, [ids.length - 1, 0], [1, shape.vocabSize]), 1).dataSync()[0];
    });
    if (next === IM_END_ID || next === ENDOFTEXT_ID) break;
    out.push(next);
    ids.push(next);
  }
  return out;
}
