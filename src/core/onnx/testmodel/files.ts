/**
 * The JSON files of a test-model folder (config.json, generation_config.json) and the atomic writer every file of
 * the folder goes through. Output is a pure function of the build options, so rebuilding gives identical bytes.
 */
import type { DecoderShape, TestDtype, TestTopology } from './config.js';
import { ENDOFTEXT_ID, IM_END_ID } from './tokenizer.js';

/** Indented JSON with a trailing newline; key order is the order the objects were written in (deterministic). */
export function stableJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** Every file of a test-model folder goes through the project's one atomic writer. */
export { writeFileAtomic } from '../../util/atomic-write.js';

export interface ConfigOptions {
  shape: DecoderShape;
  topology: TestTopology;
  /** ONNX file name inside onnx/, e.g. "model.onnx"; used to flag external data for exactly that file. */
  onnxBaseName: string;
  externalData: boolean;
  dtype: TestDtype;
}

/** HF config.json: "qwen2" when q/k/v carry a bias (as Qwen2 does), "llama" otherwise. */
export function buildConfigJson(o: ConfigOptions): Record<string, unknown> {
  const s = o.shape;
  const qwen2 = s.attentionBias;
  const config: Record<string, unknown> = {
    architectures: [qwen2 ? 'Qwen2ForCausalLM' : 'LlamaForCausalLM'],
    attention_bias: s.attentionBias,
    attention_dropout: 0.0,
    bos_token_id: ENDOFTEXT_ID,
    eos_token_id: IM_END_ID,
    head_dim: s.headDim,
    hidden_act: 'silu',
    hidden_size: s.hiddenSize,
    initializer_range: 0.02,
    intermediate_size: s.intermediateSize,
    max_position_embeddings: s.maxPositionEmbeddings,
    mlp_bias: false,
    model_type: qwen2 ? 'qwen2' : 'llama',
    num_attention_heads: s.numHeads,
    num_hidden_layers: s.numLayers,
    num_key_value_heads: s.numKvHeads,
    pad_token_id: ENDOFTEXT_ID,
    rms_norm_eps: s.rmsNormEps,
    rope_scaling: null,
    rope_theta: s.ropeTheta,
    tie_word_embeddings: s.tieWordEmbeddings,
    torch_dtype: 'float32',
    use_cache: true,
    vocab_size: s.vocabSize,
  };
  if (qwen2) {
    config.use_sliding_window = false;
    config.sliding_window = null;
    config.max_window_layers = s.numLayers;
  }
  const tjs: Record<string, unknown> = { dtype: o.dtype };
  // Keyed by file name so that only this file is looked for with an .onnx_data companion.
  if (o.externalData) tjs.use_external_data_format = { [o.onnxBaseName]: 1 };
  config['transformers.js_config'] = tjs;
  config.steerlab_topology = o.topology;
  return config;
}

/** Greedy by default; generation stops at <|im_end|> (end of a ChatML turn) or <|endoftext|>. */
export function buildGenerationConfigJson(): Record<string, unknown> {
  return {
    bos_token_id: ENDOFTEXT_ID,
    do_sample: false,
    eos_token_id: [IM_END_ID, ENDOFTEXT_ID],
    pad_token_id: ENDOFTEXT_ID,
  };
}
