/**
 * llama.cpp's C API, called directly (koffi FFI) on the prebuilt libraries node-llama-cpp ships (pinned 3.21.1; its
 * llama.cpp release v0.4.0). node-llama-cpp's own JavaScript API has no control-vector call; the library has one
 * (llama_set_adapter_cvec), and llama-common has the loader `llama-cli --control-vector FILE` uses
 * (common_control_vector_load). This helper reaches both, so a test can check an exported control vector the way
 * llama.cpp itself reads and applies it.
 *
 * Only what the tests and the bench need: load a GGUF model on the CPU, make a context, load and apply a control
 * vector, feed tokens, read the last position's logits, decode greedily. The struct layouts follow llama.h of that
 * release; the fields this helper writes sit at the start of each struct (checked against the C compiler's offsets
 * when the helper was written: llama_model_params 80 bytes, llama_context_params 160, llama_batch 56), the rest is
 * copied through as the library's defaults fill it.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import koffi from 'koffi';

const require = createRequire(import.meta.url);

/** The folder of node-llama-cpp's prebuilt CPU libraries for this platform. */
export function llamaBinDir(): string {
  // the binaries package is node-llama-cpp's optional dependency: resolved from there; its entry is dist/index.js
  const fromPkg = createRequire(require.resolve('node-llama-cpp'));
  const pkg = dirname(dirname(fromPkg.resolve(`@node-llama-cpp/${process.platform}-${process.arch}`)));
  const dir = join(pkg, 'bins', `${process.platform}-${process.arch}`);
  if (!existsSync(dir)) throw new Error(`llama-capi: no prebuilt llama.cpp folder at ${dir}`);
  return dir;
}

function libFile(dir: string, stem: string): string {
  const f = readdirSync(dir).find((n) => n === `${stem}.so` || (n.startsWith(`${stem}.`) && n.endsWith('.so')));
  if (!f) throw new Error(`llama-capi: ${stem}*.so not found in ${dir}`);
  return join(dir, f);
}

// llama_model_params: only passed through (defaults: every layer on the CPU backend, mmap).
const ModelParams = koffi.struct('llama_model_params', { raw: koffi.array('uint64_t', 10) });
// llama_context_params: the sizes and thread counts at the front, the rest (ctx_type at 36, then 8-aligned) opaque.
const ContextParams = koffi.struct('llama_context_params', {
  n_ctx: 'uint32_t',
  n_batch: 'uint32_t',
  n_ubatch: 'uint32_t',
  n_seq_max: 'uint32_t',
  n_rs_seq: 'uint32_t',
  n_outputs_max: 'uint32_t',
  n_outputs_max_per_seq: 'uint32_t',
  n_threads: 'int32_t',
  n_threads_batch: 'int32_t',
  ctx_type: 'int32_t',
  rest: koffi.array('uint64_t', 15),
});
const Batch = koffi.struct('llama_batch', {
  n_tokens: 'int32_t',
  token: 'void *',
  embd: 'void *',
  pos: 'void *',
  n_seq_id: 'void *',
  seq_id: 'void *',
  logits: 'void *',
});
// common_control_vector_data { int n_embd; std::vector<float> data; } (libstdc++: begin, end, capacity pointers).
// A 32-byte aggregate: returned through a hidden pointer whether C or C++ (SysV), so the C view calls it correctly.
const CvecData = koffi.struct('common_control_vector_data', { n_embd: 'int32_t', begin: 'void *', end: 'void *', cap: 'void *' });
const LogCallback = koffi.proto('void llama_log_callback(int level, const char *text, void *user)');

interface Api {
  modelDefaults: () => unknown;
  loadModel: (path: string, p: unknown) => unknown;
  freeModel: (m: unknown) => void;
  nEmbd: (m: unknown) => number;
  nLayer: (m: unknown) => number;
  vocab: (m: unknown) => unknown;
  nVocab: (v: unknown) => number;
  contextDefaults: () => Record<string, unknown>;
  initContext: (m: unknown, p: unknown) => unknown;
  freeContext: (c: unknown) => void;
  decode: (c: unknown, b: unknown) => number;
  logitsIth: (c: unknown, i: number) => unknown;
  greedySampler: () => unknown;
  sample: (smpl: unknown, c: unknown, i: number) => number;
  freeSampler: (smpl: unknown) => void;
  setCvec: (c: unknown, data: unknown, len: number, nEmbd: number, start: number, end: number) => number;
  loadCvec: (infos: unknown) => { n_embd: number; begin: unknown; end: unknown; cap: unknown };
}

let api: Api | null = null;
// The log callback stays registered for the process: ggml and llama.cpp keep the pointer.
let quiet: unknown = null;

/** The llama.cpp release whose llama.h the layouts above follow (node-llama-cpp 3.21.1's binaries). */
const LLAMA_RELEASE = 'v0.4.0';

function load(): Api {
  if (api) return api;
  // a newer node-llama-cpp brings another llama.cpp, whose structs may differ: refused rather than called blindly
  const release = (JSON.parse(readFileSync(join(dirname(require.resolve('node-llama-cpp')), '..', 'llama', 'binariesGithubRelease.json'), 'utf8')) as { release?: string }).release;
  if (release !== LLAMA_RELEASE) throw new Error(`llama-capi: written for llama.cpp release ${LLAMA_RELEASE} (node-llama-cpp 3.21.1), found ${release}: check the struct layouts against its llama.h`);
  for (const [t, n] of [[ModelParams, 80], [ContextParams, 160], [Batch, 56], [CvecData, 32]] as const) {
    if (koffi.sizeof(t) !== n) throw new Error(`llama-capi: a struct is ${koffi.sizeof(t)} bytes here, llama.h says ${n}`);
  }
  const dir = llamaBinDir();
  const base = koffi.load(libFile(dir, 'libggml-base'));
  // silent unless asked: ggml and llama.cpp log through these callbacks (llama-common logs errors on its own)
  quiet = koffi.register((_level: number, text: string) => {
    if (process.env.LLAMA_CAPI_LOG) process.stderr.write(text);
  }, koffi.pointer(LogCallback));
  base.func('void ggml_log_set(llama_log_callback *cb, void *user)')(quiet, null);
  // ggml's CPU kernels are separate libraries chosen for this CPU at run time (libggml-cpu-<arch>.so); loaded once
  // per process (node-llama-cpp, in the same process, loads them from the same folder)
  const ggml = koffi.load(libFile(dir, 'libggml'));
  if (ggml.func('size_t ggml_backend_dev_count()')() === 0) ggml.func('void ggml_backend_load_all_from_path(const char *dir)')(dir);
  const llama = koffi.load(libFile(dir, 'libllama'));
  const common = koffi.load(libFile(dir, 'libllama-common'));
  llama.func('void llama_log_set(llama_log_callback *cb, void *user)')(quiet, null);
  llama.func('void llama_backend_init()')();
  api = {
    modelDefaults: llama.func('llama_model_params llama_model_default_params()'),
    loadModel: llama.func('void *llama_model_load_from_file(const char *path, llama_model_params params)'),
    freeModel: llama.func('void llama_model_free(void *model)'),
    nEmbd: llama.func('int32_t llama_model_n_embd(void *model)'),
    nLayer: llama.func('int32_t llama_model_n_layer(void *model)'),
    vocab: llama.func('void *llama_model_get_vocab(void *model)'),
    nVocab: llama.func('int32_t llama_vocab_n_tokens(void *vocab)'),
    contextDefaults: llama.func('llama_context_params llama_context_default_params()'),
    initContext: llama.func('void *llama_init_from_model(void *model, llama_context_params params)'),
    freeContext: llama.func('void llama_free(void *ctx)'),
    decode: llama.func('int32_t llama_decode(void *ctx, llama_batch batch)'),
    logitsIth: llama.func('void *llama_get_logits_ith(void *ctx, int32_t i)'),
    greedySampler: llama.func('void *llama_sampler_init_greedy()'),
    sample: llama.func('int32_t llama_sampler_sample(void *smpl, void *ctx, int32_t idx)'),
    freeSampler: llama.func('void llama_sampler_free(void *smpl)'),
    setCvec: llama.func('int32_t llama_set_adapter_cvec(void *ctx, void *data, size_t len, int32_t n_embd, int32_t il_start, int32_t il_end)'),
    // common_control_vector_load(const std::vector<common_control_vector_load_info> &): C++ name, by its mangled symbol
    loadCvec: common.func('_Z26common_control_vector_loadRKSt6vectorI31common_control_vector_load_infoSaIS0_EE', CvecData, ['void *']),
  };
  return api;
}

/** Native memory that the garbage collector never moves (small typed arrays can live in V8's moving heap). */
function native(bytes: number): { ptr: unknown; addr: bigint; view: DataView } {
  const ptr = koffi.alloc('uint8_t', bytes);
  return { ptr, addr: koffi.address(ptr), view: new DataView(koffi.view(ptr, bytes)) };
}

/**
 * A control vector as llama.cpp's loader reads it: common_control_vector_load on one file at strength 1. Returns
 * n_embd and the buffer llama_set_adapter_cvec takes (layer 1's vector first: llama.cpp has no vector for layer 0);
 * throws with the file's name when the loader refuses it (it returns n_embd -1 and logs why).
 */
export function loadControlVector(file: string, strength = 1): { nEmbd: number; data: Float32Array } {
  const a = load();
  const path = Buffer.from(file, 'utf8');
  const str = native(path.length + 1);
  new Uint8Array(str.view.buffer).set(path);
  str.view.setUint8(path.length, 0);
  // common_control_vector_load_info { float strength; std::string fname; }, the string in libstdc++'s heap form
  // (pointer, length, capacity): the loader only reads it (c_str())
  const info = native(40);
  info.view.setFloat32(0, strength, true);
  info.view.setBigUint64(8, str.addr, true);
  info.view.setBigUint64(16, BigInt(path.length), true);
  info.view.setBigUint64(24, BigInt(path.length), true);
  const vec = native(24); // std::vector<info>: begin, end, end of storage
  vec.view.setBigUint64(0, info.addr, true);
  vec.view.setBigUint64(8, info.addr + 40n, true);
  vec.view.setBigUint64(16, info.addr + 40n, true);
  try {
    const r = a.loadCvec(vec.ptr);
    if (r.n_embd === -1) throw new Error(`llama.cpp's control-vector loader refused ${file} (LLAMA_CAPI_LOG=1 prints its reason)`);
    const count = Number(koffi.address(r.end) - koffi.address(r.begin)) / 4;
    // copied out: the vector's storage belongs to llama-common's allocator and is left to the process
    return { nEmbd: r.n_embd, data: new Float32Array(koffi.decode(r.begin, 'float', count) as number[]) };
  } finally {
    for (const m of [vec, info, str]) koffi.free(m.ptr);
  }
}

export interface LlamaRun {
  nEmbd: number;
  nLayer: number;
  nVocab: number;
  /**
   * Applies a control vector to the context (data: layer 1 first, as loadControlVector returns it; il range
   * inclusive, llama-cli's defaults 1..n_layer), or clears it with null. Throws when llama.cpp refuses.
   */
  setControlVector(cv: { nEmbd: number; data: Float32Array } | null, ilStart?: number, ilEnd?: number): void;
  /** A fresh context (nothing fed), the control vector applied again. */
  reset(): void;
  /** Feeds `ids` after what the context holds; returns the last position's logits. */
  feed(ids: readonly number[]): Float32Array;
  /**
   * Greedy tokens after `prompt` from a fresh context (llama.cpp's greedy sampler: the first largest logit, as
   * Steerlab's argmax), `max` tokens or up to one of `eos`; `onToken` after each.
   */
  greedy(prompt: readonly number[], max: number, eos: readonly number[], onToken?: (t: number) => void): number[];
  dispose(): void;
}

/** Loads a GGUF model on the CPU backend with a context of `contextSize` tokens and `threads` threads. */
export function openLlama(file: string, opts: { contextSize?: number; threads?: number } = {}): LlamaRun {
  const a = load();
  const model = a.loadModel(file, a.modelDefaults());
  if (!model) throw new Error(`llama.cpp could not load ${file} (LLAMA_CAPI_LOG=1 prints why)`);
  const nEmbd = a.nEmbd(model);
  const nLayer = a.nLayer(model);
  const nVocab = a.nVocab(a.vocab(model));
  const n = opts.contextSize ?? 512;
  const threads = opts.threads ?? 1;
  const newContext = () => {
    const p = a.contextDefaults();
    Object.assign(p, { n_ctx: n, n_batch: n, n_ubatch: n, n_threads: threads, n_threads_batch: threads });
    const c = a.initContext(model, p);
    if (!c) throw new Error(`llama.cpp could not make a context of ${n} tokens for ${file}`);
    return c;
  };
  let ctx = newContext();
  const tokens = koffi.alloc('int32_t', n);
  let cvec: { cv: { nEmbd: number; data: Float32Array }; start: number; end: number } | null = null;
  // the cvec buffer must outlive the call only for the copy llama_set_adapter_cvec makes; kept anyway for the reset
  const apply = () => {
    const rc = cvec ? a.setCvec(ctx, cvec.cv.data, cvec.cv.data.length, cvec.cv.nEmbd, cvec.start, cvec.end) : a.setCvec(ctx, null, 0, nEmbd, 0, 0);
    if (rc !== 0) throw new Error(`llama_set_adapter_cvec returned ${rc} (n_embd ${cvec?.cv.nEmbd}, model ${nEmbd})`);
  };
  const decodeIds = (ids: readonly number[]) => {
    if (ids.length === 0) throw new Error('llama.cpp: no tokens to feed');
    if (ids.length > n) throw new Error(`llama.cpp: ${ids.length} tokens do not fit the context of ${n}`);
    koffi.encode(tokens, 'int32_t', Array.from(ids), ids.length);
    // a batch without positions, sequence ids or output flags: llama.cpp numbers the positions on from what the
    // context holds and outputs the last token's logits (what llama_batch_get_one makes)
    const rc = a.decode(ctx, { n_tokens: ids.length, token: tokens, embd: null, pos: null, n_seq_id: null, seq_id: null, logits: null });
    if (rc !== 0) throw new Error(`llama_decode returned ${rc} for ${ids.length} token(s)`);
  };
  const sampler = a.greedySampler();
  const run: LlamaRun = {
    nEmbd,
    nLayer,
    nVocab,
    setControlVector(cv, ilStart = 1, ilEnd = nLayer) {
      cvec = cv ? { cv, start: ilStart, end: ilEnd } : null;
      apply();
    },
    feed(ids) {
      decodeIds(ids);
      return new Float32Array(koffi.decode(a.logitsIth(ctx, -1), 'float', nVocab) as number[]);
    },
    reset() {
      a.freeContext(ctx);
      ctx = newContext();
      apply();
    },
    greedy(prompt, max, eos, onToken) {
      run.reset();
      const out: number[] = [];
      decodeIds(prompt);
      for (;;) {
        const t = a.sample(sampler, ctx, -1);
        out.push(t);
        onToken?.(t);
        if (out.length >= max || eos.includes(t)) return out;
        decodeIds([t]);
      }
    },
    dispose() {
      a.freeSampler(sampler);
      koffi.free(tokens);
      a.freeContext(ctx);
      a.freeModel(model);
    },
  };
  return run;
}
