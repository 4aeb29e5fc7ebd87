/**
 * A Llama-family ONNX model as a llama.cpp GGUF model file (architecture `llama`), so that llama.cpp can run the same
 * weights as Steerlab (the benchmark's peer, and a check that both compute the same tokens).
 *
 * Weights are read by their Hugging Face names (model.layers.N.self_attn.q_proj.weight ...; the onnxruntime-genai
 * graphs' model.layers.N.attn.* too), as the organism and the test models name them, through the weights reader
 * (src/core/onnx/weights-reader.ts): plain MatMul weights [in, out], or com.microsoft MatMulNBits 4-bit codes and
 * scales ({name}.quant, {name}.scales). GGUF wants [out, in] rows (ggml dims [in, out]).
 *
 * llama.cpp facts this follows (convert_hf_to_gguf.py, llama-model.cpp, llama-vocab.cpp):
 * - `llama` applies rotary embeddings to adjacent pairs (2i, 2i+1); Hugging Face Llama rotates the two halves of
 *   each head (i, i + d/2). The converter therefore permutes the rows of q (per attention head) and k (per KV head)
 *   so that half-rotation becomes pair-rotation; so does this export (q/k biases too).
 * - Norm weights stay F32; a tied head writes no `output.weight` (llama.cpp then uses token_embd).
 * - Q4_0 is (q - 8) * d over blocks of 32 inputs with an fp16 d: exactly the symmetric 4-bit MatMulNBits scheme with
 *   block 32 (default zero point 8, fp16 scales). Such weights are repacked code for code (only the nibble order
 *   differs), so the Q4_0 file holds the very weights of the q4 graph; other sources are quantised like ggml does.
 * - Byte-level BPE tokenizers (tokenizer.json: BPE + ByteLevel) are `tokenizer.ggml.model = gpt2` with the GPT-2
 *   pre-tokenizer (`tokenizer.ggml.pre = gpt-2`), tokens in their byte-level spelling, merges as "a b", special
 *   added tokens as CONTROL, so llama.cpp splits text as transformers.js does.
 * Pure (no Node APIs): the CLI (lab export-gguf) reads the files and writes the parts.
 */
import { encodeGgufParts, GgufError, type GgmlTypeName, type GgufTensor, type GgufValue } from '../steering/gguf.js';
import { toFloat16Bits } from '../util/float16.js';
import { initializerTable, type ExternalDataReader, type InitializerTable } from '../onnx/weights-reader.js';
import { fetchModelFile, ModelFileNotFoundError } from './fetch-file.js';
import { DTYPE_SUFFIX } from './hub-paths.js';
import type { Dtype } from './types.js';

export const GGUF_EXPORT_TYPES = ['f32', 'f16', 'q8_0', 'q4_0'] as const;
export type GgufExportType = (typeof GGUF_EXPORT_TYPES)[number];

/** ggml llama_ftype of a file whose 2-D weights are all of one type. */
const FILE_TYPE: Record<GgufExportType, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7 };
/** llama.cpp token types. */
const TOKEN_NORMAL = 1;
const TOKEN_CONTROL = 3;
const TOKEN_USER_DEFINED = 4;
const TOKEN_UNUSED = 5;
const ONNX_FLOAT16 = 10;

export interface GgufExportInput {
  /** The ONNX decoder graph (weights inline or in external data). */
  graph: Uint8Array;
  externalData?: ExternalDataReader;
  config: Record<string, unknown>;
  /** tokenizer.json */
  tokenizer: Record<string, unknown>;
  /** tokenizer_config.json (chat template, special tokens, add_bos_token) */
  tokenizerConfig: Record<string, unknown>;
  generationConfig?: Record<string, unknown> | null;
  type: GgufExportType;
  /** general.name */
  name: string;
}

export interface GgufExportReport {
  type: GgufExportType;
  tensors: number;
  bytes: number;
  /** How each tensor was written: 'f32', 'f16', 'q8_0', 'q4_0', or 'q4_0 (repacked)' for MatMulNBits codes. */
  encodings: Record<string, string>;
  vocabSize: number;
  numLayers: number;
}

function int(cfg: Record<string, unknown>, key: string, fallback?: number): number {
  const v = cfg[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new GgufError(`config.json: ${key} must be a positive integer, got ${JSON.stringify(cfg[key])}`);
  return v;
}

function num(cfg: Record<string, unknown>, key: string, fallback: number): number {
  const v = cfg[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new GgufError(`config.json: ${key} must be a positive number, got ${JSON.stringify(cfg[key])}`);
  return v;
}

/**
 * Rows of a [rows, cols] matrix reordered for llama.cpp's pair rotation: within each head of `headDim` rows, new row
 * 2i + j takes old row j * headDim / 2 + i (convert_hf_to_gguf's LlamaModel.permute). `rowBytes`: bytes per row.
 */
export function permuteRopeRows<T extends Float32Array | Uint8Array>(m: T, heads: number, headDim: number, rowLen: number): T {
  const out = new (m.constructor as { new (n: number): T })(m.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const to = h * headDim + 2 * i + j;
        const from = h * headDim + j * half + i;
        out.set(m.subarray(from * rowLen, (from + 1) * rowLen), to * rowLen);
      }
    }
  }
  return out;
}

/** [rows, cols] row-major -> [cols, rows] row-major. */
function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = m[r * cols + c]!;
  return out;
}

/** A projection's weight as GGUF wants it: [out, in] rows, as values or as repacked Q4_0 blocks. */
interface Projection {
  out: number;
  in: number;
  /** [out, in] row-major values */
  values: () => Promise<Float32Array>;
  /** MatMulNBits 4-bit, block 32, no zero points: the Q4_0 bytes of each row ([out] rows of in/32 blocks). */
  q4?: () => Promise<Uint8Array>;
}

function projection(t: InitializerTable, base: string): Projection | null {
  const dense = t.info(`${base}.weight`);
  if (dense) {
    if (dense.dims.length !== 2) throw new GgufError(`${base}.weight has ${dense.dims.length} dimensions, expected 2 ([in, out])`);
    const [k, n] = dense.dims as [number, number];
    return { in: k, out: n, values: async () => transpose(await t.float(`${base}.weight`), k, n) };
  }
  const codes = t.info(`${base}.weight.quant`);
  const scales = t.info(`${base}.weight.scales`);
  if (!codes || !scales) return null;
  if (t.info(`${base}.weight.zero_points`)) throw new GgufError(`${base}: MatMulNBits with zero points is not supported by the export`);
  if (codes.dims.length !== 3) throw new GgufError(`${base}.weight.quant has dims [${codes.dims}], expected [N, blocks, block/2] (4-bit MatMulNBits)`);
  const [n, nBlocks, blob] = codes.dims as [number, number, number];
  const block = blob * 2;
  const k = nBlocks * block;
  const dequant = async () => {
    const q = await t.uint8(`${base}.weight.quant`);
    const s = await t.float(`${base}.weight.scales`);
    const out = new Float32Array(n * k);
    for (let r = 0; r < n; r++) {
      for (let b = 0; b < nBlocks; b++) {
        const d = s[r * nBlocks + b]!;
        for (let j = 0; j < block; j++) {
          const byte = q[(r * nBlocks + b) * blob + (j >> 1)]!;
          out[r * k + b * block + j] = (((j & 1) === 0 ? byte & 15 : byte >> 4) - 8) * d;
        }
      }
    }
    return out;
  };
  const repack = async () => {
    const q = await t.uint8(`${base}.weight.quant`);
    const s = await t.float(`${base}.weight.scales`);
    const out = new Uint8Array(n * nBlocks * 18);
    const v = new DataView(out.buffer);
    for (let r = 0; r < n * nBlocks; r++) {
      v.setUint16(r * 18, toFloat16Bits(s[r]!), true);
      const code = (j: number) => {
        const byte = q[r * 16 + (j >> 1)]!;
        return (j & 1) === 0 ? byte & 15 : byte >> 4;
      };
      for (let j = 0; j < 16; j++) out[r * 18 + 2 + j] = code(j) | (code(16 + j) << 4);
    }
    return out;
  };
  return { in: k, out: n, values: dequant, ...(block === 32 && scales.dataType === ONNX_FLOAT16 ? { q4: repack } : {}) };
}

function firstProjection(t: InitializerTable, bases: string[], what: string): Projection {
  for (const b of bases) {
    const p = projection(t, b);
    if (p) return p;
  }
  throw new GgufError(
    `no weight for ${what}: looked for ${bases.map((b) => `${b}.weight`).join(' / ')} (or MatMulNBits ${bases[0]}.weight.quant + .scales). ` +
      'export-gguf reads weights by their Hugging Face names, as the organism and the test models name them',
  );
}

function firstFloat(t: InitializerTable, names: string[], what: string): string {
  const n = names.find((x) => t.info(x));
  if (!n) throw new GgufError(`no weight for ${what}: looked for ${names.join(' / ')}`);
  return n;
}

interface Vocab {
  tokens: string[];
  types: number[];
  merges: string[];
  idOf(text: string): number | null;
}

function readVocab(tok: Record<string, unknown>, vocabSize: number): Vocab {
  const model = tok['model'] as { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[] } | undefined;
  const pre = tok['pre_tokenizer'] as { type?: string; use_regex?: boolean } | null | undefined;
  if (model?.type !== 'BPE' || !model.vocab || !Array.isArray(model.merges)) {
    throw new GgufError(`tokenizer.json: only byte-level BPE tokenizers are exported (model.type BPE with vocab and merges), got ${JSON.stringify(model?.type)}`);
  }
  if (pre?.type !== 'ByteLevel' || pre.use_regex === false) {
    throw new GgufError(`tokenizer.json: the pre-tokenizer must be ByteLevel with the GPT-2 regex (llama.cpp 'gpt-2'), got ${JSON.stringify(pre?.type)}`);
  }
  const tokens: (string | undefined)[] = new Array(vocabSize);
  const types = new Array<number>(vocabSize).fill(TOKEN_NORMAL);
  for (const [text, id] of Object.entries(model.vocab)) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new GgufError(`tokenizer.json: token ${JSON.stringify(text)} has id ${id}, outside the model's vocabulary (${vocabSize})`);
    tokens[id] = text;
  }
  for (const a of (tok['added_tokens'] as { id: number; content: string; special?: boolean }[] | undefined) ?? []) {
    if (!Number.isInteger(a.id) || a.id < 0 || a.id >= vocabSize) throw new GgufError(`tokenizer.json: added token ${JSON.stringify(a.content)} has id ${a.id}, outside the vocabulary (${vocabSize})`);
    tokens[a.id] = a.content;
    types[a.id] = a.special ? TOKEN_CONTROL : TOKEN_USER_DEFINED;
  }
  // Ids the tokenizer never produces (vocabularies padded to a round size) still need an entry.
  for (let i = 0; i < vocabSize; i++) {
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`;
      types[i] = TOKEN_UNUSED;
    }
  }
  const merges = model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : m));
  const byText = new Map(tokens.map((t, i) => [t!, i]));
  return { tokens: tokens as string[], types, merges, idOf: (text) => byText.get(text) ?? null };
}

function tokenId(v: Vocab, cfgValue: unknown): number | null {
  if (typeof cfgValue === 'string') return v.idOf(cfgValue);
  if (cfgValue && typeof cfgValue === 'object' && typeof (cfgValue as { content?: unknown }).content === 'string') return v.idOf((cfgValue as { content: string }).content);
  return null;
}

export async function exportLlamaGguf(input: GgufExportInput): Promise<{ parts: Uint8Array[]; report: GgufExportReport }> {
  const type = input.type;
  if (!(GGUF_EXPORT_TYPES as readonly string[]).includes(type)) throw new GgufError(`type must be one of ${GGUF_EXPORT_TYPES.join(', ')}, got ${String(type)}`);
  const cfg = ((input.config['text_config'] as Record<string, unknown> | undefined) ?? input.config) as Record<string, unknown>;
  if (cfg['rope_scaling'] !== null && cfg['rope_scaling'] !== undefined) throw new GgufError(`config.json: rope_scaling ${JSON.stringify(cfg['rope_scaling'])} is not supported by the export (plain rotary embeddings only)`);
  const H = int(cfg, 'hidden_size');
  const L = int(cfg, 'num_hidden_layers');
  const I = int(cfg, 'intermediate_size');
  const nHead = int(cfg, 'num_attention_heads');
  const nKv = int(cfg, 'num_key_value_heads', nHead);
  const hd = int(cfg, 'head_dim', Math.floor(H / nHead));
  const V = int(cfg, 'vocab_size');
  const ctx = int(cfg, 'max_position_embeddings');
  const eps = num(cfg, 'rms_norm_eps', 1e-6);
  const theta = num(cfg, 'rope_theta', 10000);
  const vocab = readVocab(input.tokenizer, V);

  const t = initializerTable(input.graph, input.externalData ? { externalData: input.externalData } : {});
  const tensors: GgufTensor[] = [];
  const encodings: Record<string, string> = {};
  const add1d = async (gguf: string, name: string, n: number) => {
    const data = await t.float(name);
    if (data.length !== n) throw new GgufError(`${name} has ${data.length} values, expected ${n}`);
    tensors.push({ name: gguf, dims: [n], data });
    encodings[gguf] = 'f32';
  };
  const addMatrix = async (gguf: string, p: Projection, permuteHeads: number | null) => {
    if (p.q4 && type === 'q4_0') {
      let raw = await p.q4();
      if (permuteHeads !== null) raw = permuteRopeRows(raw, permuteHeads, hd, (p.in / 32) * 18);
      tensors.push({ name: gguf, dims: [p.in, p.out], raw, type: 'q4_0' });
      encodings[gguf] = 'q4_0 (repacked)';
      return;
    }
    let values = await p.values();
    if (permuteHeads !== null) values = permuteRopeRows(values, permuteHeads, hd, p.in);
    tensors.push({ name: gguf, dims: [p.in, p.out], data: values, type });
    encodings[gguf] = type;
  };

  const embedName = firstFloat(t, ['model.embed_tokens.weight'], 'the token embedding');
  const embed = t.info(embedName)!;
  if (embed.dims[0] !== V || embed.dims[1] !== H) throw new GgufError(`${embedName} has dims [${embed.dims}], expected [${V}, ${H}]`);
  // An fp16 embedding (q4f16 graphs) stays F16 under Q4_0/Q8_0: a gather needs no quantisation, and the file keeps the graph's values.
  const embedType: GgmlTypeName = embed.dataType === ONNX_FLOAT16 && type !== 'f32' ? 'f16' : type;
  tensors.push({ name: 'token_embd.weight', dims: [H, V], data: await t.float(embedName), type: embedType });
  encodings['token_embd.weight'] = embedType;

  for (let l = 0; l < L; l++) {
    const m = `model.layers.${l}`;
    const attn = [`${m}.self_attn`, `${m}.attn`];
    await add1d(`blk.${l}.attn_norm.weight`, firstFloat(t, [`${m}.input_layernorm.weight`], `layer ${l} input norm`), H);
    const q = firstProjection(t, attn.map((a) => `${a}.q_proj`), `layer ${l} q_proj`);
    const k = firstProjection(t, attn.map((a) => `${a}.k_proj`), `layer ${l} k_proj`);
    const v = firstProjection(t, attn.map((a) => `${a}.v_proj`), `layer ${l} v_proj`);
    const o = firstProjection(t, attn.map((a) => `${a}.o_proj`), `layer ${l} o_proj`);
    if (q.in !== H || q.out !== nHead * hd || k.out !== nKv * hd || v.out !== nKv * hd || o.in !== nHead * hd || o.out !== H) {
      throw new GgufError(`layer ${l}: attention weights [q ${q.in}x${q.out}, k ${k.in}x${k.out}, v ${v.in}x${v.out}, o ${o.in}x${o.out}] do not match config.json (hidden ${H}, ${nHead} heads, ${nKv} KV heads, head size ${hd})`);
    }
    await addMatrix(`blk.${l}.attn_q.weight`, q, nHead);
    await addMatrix(`blk.${l}.attn_k.weight`, k, nKv);
    await addMatrix(`blk.${l}.attn_v.weight`, v, null);
    await addMatrix(`blk.${l}.attn_output.weight`, o, null);
    for (const [which, heads] of [['q', nHead], ['k', nKv], ['v', null]] as const) {
      const bias = attn.map((a) => `${a}.${which}_proj.bias`).find((x) => t.info(x));
      if (!bias) continue;
      let data = await t.float(bias);
      if (heads !== null) data = permuteRopeRows(data, heads, hd, 1);
      tensors.push({ name: `blk.${l}.attn_${which}.bias`, dims: [data.length], data });
      encodings[`blk.${l}.attn_${which}.bias`] = 'f32';
    }
    await add1d(`blk.${l}.ffn_norm.weight`, firstFloat(t, [`${m}.post_attention_layernorm.weight`], `layer ${l} post-attention norm`), H);
    for (const [gguf, hf] of [['ffn_gate', 'gate_proj'], ['ffn_up', 'up_proj'], ['ffn_down', 'down_proj']] as const) {
      const p = firstProjection(t, [`${m}.mlp.${hf}`], `layer ${l} ${hf}`);
      const want = hf === 'down_proj' ? [I, H] : [H, I];
      if (p.in !== want[0] || p.out !== want[1]) throw new GgufError(`layer ${l} ${hf} is ${p.in}x${p.out}, expected ${want[0]}x${want[1]} (config.json)`);
      await addMatrix(`blk.${l}.${gguf}.weight`, p, null);
    }
  }
  await add1d('output_norm.weight', firstFloat(t, ['model.norm.weight'], 'the final norm'), H);
  const head = projection(t, 'lm_head');
  if (head) {
    if (head.in !== H || head.out !== V) throw new GgufError(`lm_head is ${head.in}x${head.out}, expected ${H}x${V}`);
    await addMatrix('output.weight', head, null);
  } else if (cfg['tie_word_embeddings'] !== true) {
    throw new GgufError('the graph has no lm_head.weight and config.json does not tie the head to the embedding');
  }

  const tc = input.tokenizerConfig;
  const gen = input.generationConfig ?? {};
  const eosCfg = gen['eos_token_id'] ?? cfg['eos_token_id'];
  const eos = Array.isArray(eosCfg) ? eosCfg[0] : eosCfg;
  const bos = tokenId(vocab, tc['bos_token']) ?? (typeof cfg['bos_token_id'] === 'number' ? cfg['bos_token_id'] : null);
  const pad = tokenId(vocab, tc['pad_token']) ?? (typeof cfg['pad_token_id'] === 'number' ? cfg['pad_token_id'] : null);
  const meta: Record<string, GgufValue> = {
    'general.architecture': { type: 'string', value: 'llama' },
    'general.name': { type: 'string', value: input.name },
    'general.file_type': { type: 'uint32', value: FILE_TYPE[type] },
    'llama.context_length': { type: 'uint32', value: ctx },
    'llama.embedding_length': { type: 'uint32', value: H },
    'llama.block_count': { type: 'uint32', value: L },
    'llama.feed_forward_length': { type: 'uint32', value: I },
    'llama.attention.head_count': { type: 'uint32', value: nHead },
    'llama.attention.head_count_kv': { type: 'uint32', value: nKv },
    'llama.attention.key_length': { type: 'uint32', value: hd },
    'llama.attention.value_length': { type: 'uint32', value: hd },
    'llama.attention.layer_norm_rms_epsilon': { type: 'float32', value: eps },
    'llama.rope.freq_base': { type: 'float32', value: theta },
    'llama.rope.dimension_count': { type: 'uint32', value: hd },
    'llama.vocab_size': { type: 'uint32', value: V },
    'tokenizer.ggml.model': { type: 'string', value: 'gpt2' },
    'tokenizer.ggml.pre': { type: 'string', value: 'gpt-2' },
    'tokenizer.ggml.tokens': { type: 'array', itemType: 'string', value: vocab.tokens },
    'tokenizer.ggml.token_type': { type: 'array', itemType: 'int32', value: vocab.types },
    'tokenizer.ggml.merges': { type: 'array', itemType: 'string', value: vocab.merges },
    'tokenizer.ggml.add_bos_token': { type: 'bool', value: tc['add_bos_token'] === true },
    'tokenizer.ggml.add_eos_token': { type: 'bool', value: tc['add_eos_token'] === true },
  };
  if (typeof eos === 'number') meta['tokenizer.ggml.eos_token_id'] = { type: 'uint32', value: eos };
  if (typeof bos === 'number') meta['tokenizer.ggml.bos_token_id'] = { type: 'uint32', value: bos };
  if (typeof pad === 'number') meta['tokenizer.ggml.padding_token_id'] = { type: 'uint32', value: pad };
  if (typeof tc['chat_template'] === 'string') meta['tokenizer.chat_template'] = { type: 'string', value: tc['chat_template'] };

  const parts = encodeGgufParts(meta, tensors);
  const bytes = parts.reduce((n, p) => n + p.length, 0);
  return { parts, report: { type, tensors: tensors.length, bytes, encodings, vocabSize: V, numLayers: L } };
}

export interface GgufFromSourceOptions {
  type: GgufExportType;
  /** The graph's dtype suffix (fp32: '', q4f16: '_q4f16' ...): which ONNX file the weights come from. */
  dtype?: Dtype;
  /** transformers.js model_file_name; tried 'model' then 'decoder_model_merged' when absent. */
  modelFileName?: string;
  /** general.name (default: the source). */
  name?: string;
}

async function json(source: string, file: string, required: boolean): Promise<Record<string, unknown> | null> {
  let bytes: Uint8Array;
  try {
    bytes = await fetchModelFile(source, file);
  } catch (e) {
    if (!required && e instanceof ModelFileNotFoundError) return null;
    throw e;
  }
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
  } catch (e) {
    throw new GgufError(`${file} of "${source}" is not valid JSON: ${(e as Error).message}`);
  }
}

/** The GGUF model of a model folder or hub id (the files a steerable load reads: cache -> local -> hub). */
export async function exportGgufFromSource(source: string, o: GgufFromSourceOptions): Promise<{ parts: Uint8Array[]; report: GgufExportReport; graphFile: string }> {
  const config = (await json(source, 'config.json', true))!;
  const suffix = DTYPE_SUFFIX[o.dtype ?? 'fp32'] ?? '';
  let graph: Uint8Array | null = null;
  let graphFile = '';
  const tried: string[] = [];
  for (const name of o.modelFileName ? [o.modelFileName] : ['model', 'decoder_model_merged']) {
    graphFile = `onnx/${name}${suffix}.onnx`;
    try {
      graph = await fetchModelFile(source, graphFile);
      break;
    } catch (e) {
      if (!(e instanceof ModelFileNotFoundError)) throw e;
      tried.push(graphFile);
    }
  }
  if (!graph) throw new GgufError(`"${source}" has no ONNX decoder for dtype ${o.dtype ?? 'fp32'}; tried ${tried.join(', ')}`);
  const files = new Map<string, Uint8Array>();
  const { parts, report } = await exportLlamaGguf({
    graph,
    externalData: async (loc) => {
      let f = files.get(loc);
      if (!f) files.set(loc, (f = await fetchModelFile(source, `onnx/${loc}`)));
      return f;
    },
    config,
    tokenizer: (await json(source, 'tokenizer.json', true))!,
    tokenizerConfig: (await json(source, 'tokenizer_config.json', false)) ?? {},
    generationConfig: await json(source, 'generation_config.json', false),
    type: o.type,
    name: o.name ?? source,
  });
  return { parts, report, graphFile };
}
