/**
 * The decode engine: steered generation for B prompts at once, straight on the onnxruntime session that
 * transformers.js created for the patched graph (onnxruntime-node in Node, onnxruntime-web in a browser), without
 * transformers.js's generate() loop. Per row: its own prompt length, steering matrix (steer_batch = B), extra
 * per-row graph inputs, sampling stream, token budget and stop.
 *
 * The flow per row is the one generate.ts runs for one prompt, so the tokens are the same:
 *   1. prefill prompt[0..n-2] unsteered, nothing captured (the lean session when there is one), or start from that
 *      prefill's cache handed in from an earlier call (DecodeRow.prefix, bit for bit the same);
 *   2. observe (only when a row needs it): the last prompt token unsteered on that cache, residual_stream read at that
 *      position; its KV is thrown away;
 *   3. steered passes: the last prompt token, then each new token, with the row's matrix.
 *   With steerPromptPositions 'all': (observe over the whole prompt,) then the whole prompt steered, then new tokens.
 *   With 'new': as 'last', but the pass over the last prompt token runs unpatched (only new tokens carry the patch).
 * The patch of a pass is the row's steering plus its other per-row inputs, e.g. `projection` (rows u_l, zero or
 * unit: the residual after layer l becomes x - (x.u_l)u_l + steering_l); passes that carry no patch get zeros.
 *
 * Rows with the same prompt (the conditions of one prompt in an eval, the two rows of a compare) share the prefill and
 * the observation: those run on one row per distinct prompt and their cache is copied to every row that shares it,
 * so a prompt is prefilled once however many rows decode it. Not where the cache lives in GPU buffers
 * (DecodeGraphInit.cacheOnDevice): there every row is prefilled.
 *
 * Padding, so that rows of different lengths share passes:
 * - graphs with a `position_ids` input (optimum-style plain and merged graphs) pad on the LEFT: pads get mask 0,
 *   real tokens their real positions; the last column of every row is its newest token.
 * - graphs without `position_ids` (onnxruntime-genai GroupQueryAttention graphs) derive positions and the write slot
 *   of each row from the mask (seqlens_k = sum(mask) - 1), which only holds for padding on the RIGHT: each row's
 *   logits are read at its own last real token, and on a decode step each row writes its new KV at its own length.
 * A multi-token pass only ever runs on an empty cache (prefill, or the whole prompt with 'all'), so pads never sit
 * between real tokens. Rows with a one-token prompt ('last') have no prefill and run as their own group.
 *
 * Finished rows leave the batch (their KV rows are dropped, and the padding columns no remaining row uses) when the
 * cache lives in CPU memory; a cache in GPU buffers keeps them riding along, their outputs ignored.
 *
 * Residuals are read only by passes that need them: the observation, steps of rows that capture every token and
 * steps of rows whose steering is a per-step policy (it reads the previous pass's residual). Every other pass runs
 * the lean session (the same patched graph without the residual_stream output) when one is given, else the
 * capturing session without fetching residual_stream.
 *
 * With an abort signal, every pass starts on a new macrotask, so an abort from outside (a worker's cancel message, a
 * SIGINT) is heard between passes even where a session run resolves on microtasks only (onnxruntime-web WASM).
 */
import { LOGITS_FROM_INPUT, PROJECTION_INPUT } from '../onnx/patcher.js';
import { fromFloat16Array } from '../util/float16.js';
import { yieldToEventLoop } from '../util/yield.js';
import { STEER_POSITIONS, type SteerPositions } from '../steering/modes.js';
import { checkProjectionRows } from './projection-rows.js';
import { argmax, rowSampler } from './sampling.js';
import type { SamplingOptions, StepContext, StepSteering } from './types.js';

/** The parts of an onnxruntime tensor (node or web) the engine uses. */
export interface OrtTensorLike {
  readonly type: string;
  readonly data: unknown;
  readonly dims: readonly number[];
  readonly location?: string;
  dispose?(): void;
}

export type OrtFeeds = Record<string, OrtTensorLike>;

/** The parts of an onnxruntime InferenceSession (node or web) the engine uses. */
export interface OrtSessionLike {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata?: readonly { name: string; isTensor?: boolean; type?: string; shape?: readonly (number | string)[] }[];
  run(feeds: OrtFeeds, fetches?: readonly string[]): Promise<Record<string, OrtTensorLike>>;
}

export type TensorData = BigInt64Array | Float32Array | Uint16Array | Uint8Array;
/** Builds a tensor of the session's own onnxruntime (its Tensor class). */
export type MakeTensor = (type: 'int64' | 'float32' | 'float16' | 'bool', data: TensorData, dims: number[]) => OrtTensorLike;

/** What the engine needs to know about a loaded, patched model. */
export interface DecodeGraphInit {
  /** The patched session: inputs `steering` (+ any extra per-row [steer_batch, L, H] inputs), output `residual_stream`. */
  session: OrtSessionLike;
  /** The same patched graph without the `residual_stream` output, for passes that read no residual; optional. */
  lean?: OrtSessionLike | null;
  tensor: MakeTensor;
  numLayers: number;
  hiddenSize: number;
  vocabSize: number;
  /** KV heads, head size and KV dtype when the session's input metadata does not give them. */
  numKvHeads?: number;
  headDim?: number;
  kvType?: 'float32' | 'float16';
  /** Tokens that end a row (kept as its last token). */
  eosTokenIds: readonly number[];
  /** Token fed at padding positions (never attended). Default: the first EOS id, else 0. */
  padTokenId?: number;
  /** max_position_embeddings; null = unknown. */
  contextLength: number | null;
  /**
   * The model's own logits processors (generation config: repetition penalty, suppressed tokens ...), applied to one
   * row's logits before sampling or argmax, as transformers.js's generate() applies them. `ids` = prompt + generated.
   */
  logitsProcessors?: ((ids: readonly number[], logits: Float32Array, promptLength: number) => void) | null;
  /** How to run a session (default: session.run). The browser build serialises runs through transformers.js's chain. */
  run?: (session: OrtSessionLike, feeds: OrtFeeds, fetches: readonly string[]) => Promise<Record<string, OrtTensorLike>>;
  /** The session returns its cache in device (GPU) buffers: rows that share a prompt are then prefilled each. */
  cacheOnDevice?: boolean;
}

/** Steering computed once from the unsteered residual of the last prompt token ([L+1, H]): the paper's setting. */
export interface ObservedSteering {
  observe(promptResidual: Float32Array): Float32Array | null | { steering: Float32Array | null; inputs?: Record<string, Float32Array> };
}

/**
 * A row's steering: a fixed [L*H] matrix, none, one computed from the observation, or a policy called before every
 * pass (it may read the previous pass's residual, so every pass of its batch captures).
 */
export type RowSteering = Float32Array | null | ObservedSteering | StepSteering;

export interface DecodeRow {
  /** Token ids of the formatted prompt. */
  ids: readonly number[];
  maxNewTokens: number;
  steering?: RowSteering;
  /** Other per-row graph inputs of shape [L, H] by name (e.g. `projection`); zeros where absent. */
  inputs?: Record<string, Float32Array>;
  /** Absent = greedy. */
  sampling?: SamplingOptions | null;
  /** 'prompt-last': return the observed residual; 'all': also the residual of every steered pass. */
  capture?: 'none' | 'prompt-last' | 'all';
  /**
   * The row's unsteered prompt prefix cache from an earlier call (DecodeResult.prefix, e.g. the eval's calibration
   * decoded the same prompt unsteered): its prefill is skipped. Used only when its ids are the row's prompt minus the
   * last token and its cache has this graph's shape and type; ignored otherwise, and with 'all' positions or a cache
   * in GPU memory. The prefix is bit for bit a batch-1 prefill, so the row's tokens do not change.
   */
  prefix?: PromptPrefix | null;
}

/** Prompt positions that carry the patch ('last' | 'all' | 'new'): see the module comment. */
export type { SteerPositions };
const POSITIONS: readonly SteerPositions[] = STEER_POSITIONS;

export interface DecodeOptions {
  /**
   * 'last' (default): the patch covers the last prompt token and new tokens; 'all': every prompt token too; 'new':
   * the new tokens only (the first reply token is predicted unpatched).
   */
  steerPromptPositions?: SteerPositions;
  signal?: AbortSignal;
  /** Called for every new token, with the row's index in the call's rows. */
  onToken?: (row: number, tokenId: number) => void;
  /**
   * Rows with capture 'all': called with each residual [L+1, H] as its pass is read (index t = the residual whose
   * logits produce token t), just before that token's onToken.
   */
  onResidual?: (row: number, index: number, residual: Float32Array) => void;
  /** Filled with what the call ran (for benchmarks and tests). */
  stats?: DecodeStats;
  /**
   * Hand back each row's unsteered prompt prefix cache (DecodeResult.prefix), so that a later unsteered pass over the
   * same prompt (an eval record's reply scoring) starts from it instead of running the prompt again.
   */
  keepPrefix?: boolean;
}

/**
 * The KV cache of a prompt minus its last token, unsteered, for one row: [1, kv heads, ids.length, head size] per
 * cache input (past_key_values.* names). Bit for bit what a batch-1 prefill of `ids` gives: left-padded graphs prefill
 * each prompt length apart (no padding), right-padded rows keep their real columns at the front.
 */
export interface PromptPrefix {
  ids: readonly number[];
  kv: Record<string, { type: 'float32' | 'float16'; data: Float32Array | Uint16Array; dims: number[] }>;
}

export interface DecodeStats {
  /** Forward passes run, and how many of them returned residual_stream. */
  passes: number;
  capturedPasses: number;
  /** Prefill passes run, and lead rows whose prefill was a prefix handed in (DecodeRow.prefix) instead. */
  prefills?: number;
  carriedPrefixes?: number;
  /** Wall time spent in session runs (ms) and in the whole call. */
  runMs: number;
  totalMs: number;
}

export interface DecodeResult {
  tokenIds: number[];
  finishReason: 'eos' | 'length' | 'abort';
  /** Unsteered residual of the last prompt token [L+1, H], when the row was observed. */
  promptResidual?: Float32Array;
  /** [T, L+1, H] (capture 'all'): row t = residual at the position whose logits produced token t. */
  tokenResiduals?: Float32Array;
  /** The steering of the first steered pass (a fixed matrix, or what observation or policy returned). */
  steering: Float32Array | null;
  /**
   * With DecodeOptions.keepPrefix: the row's unsteered prompt prefix cache (absent for a one-token prompt, 'all'
   * positions, or a cache in GPU memory). Rows of one prompt share the object.
   */
  prefix?: PromptPrefix;
}

const KNOWN_INPUTS = new Set(['input_ids', 'attention_mask', 'position_ids', 'use_cache_branch', 'steering', LOGITS_FROM_INPUT]);
const RESIDUAL = 'residual_stream';

function isObserved(s: RowSteering | undefined): s is ObservedSteering {
  return typeof s === 'object' && s !== null && !(s instanceof Float32Array) && typeof (s as ObservedSteering).observe === 'function';
}

interface RowState {
  /** Index into the caller's rows. */
  index: number;
  row: DecodeRow;
  maxNew: number;
  /** Tokens of the next pass. */
  chunk: number[];
  /** Real tokens in the cache. */
  past: number;
  /** Left padding: pad columns in front of the row's first real cache column. */
  lead: number;
  generated: number[];
  done: DecodeResult['finishReason'] | null;
  matrix: Float32Array | null;
  inputs: Record<string, Float32Array> | null;
  firstSteering: Float32Array | null;
  policy: StepSteering | null;
  observed: ObservedSteering | null;
  draw: ((row: Float32Array) => number) | null;
  promptResidual: Float32Array | null;
  previous: Float32Array | null;
  tokenRes: Float32Array[];
  prefix: PromptPrefix | null;
}

/** One decode engine per loaded model: the graph facts are read once, each decode() call is independent. */
export class DecodeEngine {
  readonly L: number;
  readonly H: number;
  readonly leftPadding: boolean;
  readonly extraInputs: readonly string[];
  private readonly kvHeads: number;
  private readonly headDim: number;
  private readonly kvType: 'float32' | 'float16';
  /** [past input name, present output name] */
  private readonly kvPairs: [string, string][];
  private readonly fetchCapture: string[];
  private readonly fetchLean: string[];
  /** A prefill reads only the cache (onnxruntime computes the logits anyway, but they are not copied out). */
  private readonly fetchKv: string[];
  private readonly pad: number;
  private readonly runSession: NonNullable<DecodeGraphInit['run']>;
  private zeroRows: OrtTensorLike | null = null;
  /** The graph limits the head's positions (patcher logitsFrom); `fromZero`: the feed for every position. */
  private readonly hasLogitsFrom: boolean;
  private readonly fromZero: OrtTensorLike | null;
  private cacheBranch: [OrtTensorLike, OrtTensorLike] | null = null;

  constructor(readonly g: DecodeGraphInit) {
    const s = g.session;
    this.L = g.numLayers;
    this.H = g.hiddenSize;
    const names = s.inputNames;
    for (const need of ['input_ids', 'attention_mask', 'steering']) {
      if (!names.includes(need)) throw new Error(`decode: the session has no '${need}' input (inputs: ${names.join(', ')}); expected a patched decoder`);
    }
    if (!s.outputNames.includes(RESIDUAL)) throw new Error(`decode: the session has no '${RESIDUAL}' output; expected the patched (capturing) graph`);
    if (!s.outputNames.includes('logits')) throw new Error(`decode: the session has no 'logits' output (outputs: ${s.outputNames.join(', ')})`);
    this.leftPadding = names.includes('position_ids');
    const past = names.filter((n) => n.startsWith('past_key_values'));
    if (past.length === 0) throw new Error('decode: the session has no past_key_values.* inputs; expected a decoder with a KV cache');
    this.kvPairs = past.map((p) => {
      const present = s.outputNames.find((o) => o.startsWith('present') && o.replace('present', 'past_key_values') === p);
      if (!present) throw new Error(`decode: no present* output feeds the cache input ${p}`);
      return [p, present];
    });
    this.extraInputs = names.filter((n) => !KNOWN_INPUTS.has(n) && !n.startsWith('past_key_values'));
    const meta = s.inputMetadata?.find((m) => m.name === past[0]);
    const shape = meta?.shape ?? [];
    const num = (v: unknown) => (typeof v === 'number' && v > 0 ? v : undefined);
    const kvHeads = num(shape[1]) ?? g.numKvHeads;
    const headDim = num(shape[3]) ?? g.headDim;
    const kvType = meta?.type === 'float16' || meta?.type === 'float32' ? meta.type : g.kvType;
    if (!kvHeads || !headDim || !kvType) throw new Error(`decode: cannot tell the KV cache shape of ${past[0]} (metadata [${shape.join(', ')}] ${meta?.type ?? '?'}); pass numKvHeads, headDim and kvType`);
    this.kvHeads = kvHeads;
    this.headDim = headDim;
    this.kvType = kvType;
    const presents = this.kvPairs.map(([, o]) => o);
    this.fetchKv = presents;
    this.fetchLean = ['logits', ...presents];
    this.fetchCapture = [...this.fetchLean, RESIDUAL];
    if (g.lean) {
      const missing = names.filter((n) => !g.lean!.inputNames.includes(n));
      if (missing.length || g.lean.outputNames.includes(RESIDUAL) || presents.some((p) => !g.lean!.outputNames.includes(p))) {
        throw new Error(`decode: the lean session is not the same graph without '${RESIDUAL}' (missing inputs: ${missing.join(', ') || 'none'})`);
      }
    }
    this.pad = g.padTokenId ?? g.eosTokenIds[0] ?? 0;
    this.hasLogitsFrom = names.includes(LOGITS_FROM_INPUT);
    this.fromZero = this.hasLogitsFrom ? g.tensor('int64', BigInt64Array.of(0n), [1]) : null;
    this.runSession = g.run ?? ((sess, feeds, fetches) => sess.run(feeds, fetches));
  }

  /** Decodes every row; results in the rows' order. Rows with a one-token prompt ('last') run as their own group. */
  async decode(rows: readonly DecodeRow[], opts: DecodeOptions = {}): Promise<DecodeResult[]> {
    const t0 = performance.now();
    const mode = opts.steerPromptPositions ?? 'last';
    if (!POSITIONS.includes(mode)) throw new Error(`steerPromptPositions must be 'last', 'all' or 'new', got ${String(mode)}`);
    if (!Array.isArray(rows) || rows.length === 0) throw new Error('decode: rows must be a non-empty array');
    const states = rows.map((r, i) => this.initRow(r, i));
    const results: DecodeResult[] = new Array(rows.length);
    const groups = mode !== 'all' ? [states.filter((s) => s.row.ids.length === 1), states.filter((s) => s.row.ids.length > 1)] : [states];
    for (const group of groups) {
      if (group.length) await this.runGroup(group, mode, opts);
    }
    for (const s of states) {
      const r: DecodeResult = { tokenIds: s.generated, finishReason: s.done ?? 'abort', steering: s.firstSteering };
      if (s.promptResidual) r.promptResidual = s.promptResidual;
      if (s.prefix) r.prefix = s.prefix;
      if (s.row.capture === 'all') {
        const L1H = (this.L + 1) * this.H;
        const tr = new Float32Array(s.tokenRes.length * L1H);
        s.tokenRes.forEach((x, i) => tr.set(x, i * L1H));
        r.tokenResiduals = tr;
      }
      results[s.index] = r;
    }
    if (opts.stats) opts.stats.totalMs += performance.now() - t0;
    return results;
  }

  private initRow(r: DecodeRow, index: number): RowState {
    const what = `decode rows[${index}]`;
    const ids = r?.ids;
    if (!Array.isArray(ids) || ids.length === 0) throw new Error(`${what}.ids must be a non-empty array of token ids`);
    ids.forEach((v, i) => {
      if (!Number.isInteger(v) || v < 0 || v >= this.g.vocabSize) throw new Error(`${what}.ids[${i}] = ${v} is not a token id (expected an integer in [0, ${this.g.vocabSize}))`);
    });
    const ctx = this.g.contextLength;
    if (ctx !== null && ids.length >= ctx) {
      throw new Error(`${what} has ${ids.length} tokens and fills the model's context (max_position_embeddings = ${ctx}): no room for a reply; shorten the prompt`);
    }
    if (!Number.isInteger(r.maxNewTokens) || r.maxNewTokens < 1) throw new Error(`${what}.maxNewTokens must be an integer >= 1, got ${r.maxNewTokens}`);
    const capture = r.capture ?? 'none';
    if (!['none', 'prompt-last', 'all'].includes(capture)) throw new Error(`${what}.capture must be 'none', 'prompt-last' or 'all', got ${String(capture)}`);
    const st = r.steering ?? null;
    if (!(st === null || st instanceof Float32Array || typeof st === 'function' || isObserved(st))) {
      throw new Error(`${what}.steering must be a Float32Array [L*H], null, { observe(residual) } or a policy function`);
    }
    if (st instanceof Float32Array) this.checkMatrix(st, `${what}.steering`);
    const inputs = this.checkInputs(r.inputs, what);
    return {
      index,
      row: r,
      maxNew: ctx === null ? r.maxNewTokens : Math.min(r.maxNewTokens, ctx - ids.length),
      chunk: [],
      past: 0,
      lead: 0,
      generated: [],
      done: null,
      matrix: st instanceof Float32Array ? st : null,
      inputs,
      firstSteering: st instanceof Float32Array ? st : null,
      policy: typeof st === 'function' ? st : null,
      observed: isObserved(st) ? st : null,
      draw: r.sampling ? rowSampler(r.sampling) : null,
      promptResidual: null,
      previous: null,
      tokenRes: [],
      prefix: null,
    };
  }

  private checkMatrix(m: Float32Array, what: string): void {
    const lh = this.L * this.H;
    if (!(m instanceof Float32Array) || m.length !== lh) {
      throw new Error(`${what} must be a Float32Array of ${lh} (= ${this.L} layers x ${this.H} hidden) values, got ${m instanceof Float32Array ? `${m.length} values` : Object.prototype.toString.call(m)}`);
    }
    for (let i = 0; i < lh; i++) {
      if (!Number.isFinite(m[i]!)) throw new Error(`${what}[${i}] (layer ${Math.floor(i / this.H)}) is ${m[i]}; expected a finite number`);
    }
  }

  private checkInputs(inputs: Record<string, Float32Array> | undefined, what: string): Record<string, Float32Array> | null {
    if (inputs === undefined || inputs === null) return null;
    for (const [name, m] of Object.entries(inputs)) {
      if (!this.extraInputs.includes(name)) {
        throw new Error(`${what}.inputs.${name}: the graph has no such per-row input (it takes: ${this.extraInputs.join(', ') || 'none besides steering'})`);
      }
      this.checkMatrix(m, `${what}.inputs.${name}`);
      if (name === PROJECTION_INPUT) {
        try {
          checkProjectionRows(m, this.L, this.H, 1);
        } catch (e) {
          throw new Error(`${what}.inputs.${name}: ${(e as Error).message}`);
        }
      }
    }
    return inputs;
  }

  private async runGroup(rows: RowState[], mode: SteerPositions, opts: DecodeOptions): Promise<void> {
    const aborted = () => opts.signal?.aborted === true;
    let active = rows;
    let kv: Record<string, OrtTensorLike> | null = null;
    let T = 0;
    const retire = (old: Record<string, OrtTensorLike> | null, next: Record<string, OrtTensorLike> | null) => {
      if (!old) return;
      const keep = new Set(next ? Object.values(next) : []);
      for (const t of Object.values(old)) if (t.location === 'gpu-buffer' && !keep.has(t)) t.dispose?.();
    };
    // Rows with the same prompt: the unsteered passes run on one row per prompt (`lead`), of[b] = rows[b]'s lead row.
    const shared = this.g.cacheOnDevice ? null : sharedPrompts(rows);
    const lead = shared?.lead ?? rows;
    try {
      if (aborted()) return;
      // 1 + 2 on the lead rows, one pass each per part (see prefillParts)
      const observing = rows.some((s) => s.observed || s.policy || (s.row.capture ?? 'none') !== 'none');
      const leadRes: Float32Array[] = [];
      const parts = this.prefillParts(lead);
      const cached: { part: number[]; kv: Record<string, OrtTensorLike> | null; T: number }[] = [];
      let observation: Record<string, OrtTensorLike> | null = null;
      for (const part of parts) {
        const ps = part.map((i) => lead[i]!);
        let pkv: Record<string, OrtTensorLike> | null = null;
        let pT = 0;
        // 1. unsteered prefill of all but the last prompt token (or the prefixes handed in: see carriedPart)
        if (mode !== 'all' && ps[0]!.row.ids.length > 1) {
          for (const s of ps) s.chunk = s.row.ids.slice(0, -1);
          if (this.carriedPart(ps)) {
            pkv = this.kvFromPrefixes(ps);
            pT = this.advance(ps, 0, true);
            ps.forEach((s) => (s.prefix = opts.keepPrefix ? s.row.prefix! : null));
            if (opts.stats) opts.stats.carriedPrefixes = (opts.stats.carriedPrefixes ?? 0) + ps.length;
          } else {
            const out = await this.pass(ps, null, 0, false, false, opts, false);
            pkv = this.kvFrom(out);
            pT = this.advance(ps, 0);
            if (opts.keepPrefix && !this.g.cacheOnDevice) ps.forEach((s, j) => (s.prefix = this.prefixOf(pkv!, j, s)));
            if (opts.stats) opts.stats.prefills = (opts.stats.prefills ?? 0) + 1;
          }
        }
        for (const s of ps) s.chunk = mode === 'all' ? [...s.row.ids] : [s.row.ids.at(-1)!];
        if (aborted()) {
          retire(pkv, null);
          for (const c of cached) retire(c.kv, null);
          return;
        }
        // 2. observation: the same inputs as the first steered pass, unsteered, residuals read
        if (observing) {
          const out = await this.pass(ps, pkv, pT, false, true, opts);
          ps.forEach((s, j) => (leadRes[part[j]!] = this.residualAt(out[RESIDUAL]!, j, this.lastPos(s))));
          if (parts.length === 1) observation = out;
          else retire(this.kvFrom(out), pkv);
        }
        cached.push({ part, kv: pkv, T: pT });
      }
      ({ kv, T } = cached.length === 1 ? cached[0]! : this.mergeLeft(cached, lead));
      for (const s of rows) s.chunk = mode === 'all' ? [...s.row.ids] : [s.row.ids.at(-1)!];

      let reuse: Record<string, OrtTensorLike> | null = null;
      if (observing) {
        rows.forEach((s, b) => {
          s.promptResidual = leadRes[shared ? shared.of[b]! : b]!;
          if (s.observed) {
            const o = s.observed.observe(s.promptResidual);
            const m = o instanceof Float32Array || o === null ? o : o.steering;
            if (m !== null) this.checkMatrix(m, `decode rows[${s.index}] observed steering`);
            s.matrix = m;
            s.firstSteering = m;
            if (!(o instanceof Float32Array) && o !== null && o.inputs) s.inputs = this.checkInputs(o.inputs, `decode rows[${s.index}] observed`);
          }
        });
        // The unsteered pass IS the first steered pass when nothing steers it (e.g. capture only, or a null policy),
        // and always with 'new' (its first pass carries no patch).
        if (observation) {
          if (mode === 'new' || rows.every((s) => s.matrix === null && !s.policy && !s.inputs)) reuse = shared ? this.expandRows(observation, shared.of) : observation;
          else retire(this.kvFrom(observation), kv);
        }
      }
      if (shared) {
        if (kv && !reuse) {
          const copied = this.expandRows(kv, shared.of);
          retire(kv, copied);
          kv = copied;
        }
        rows.forEach((s, b) => {
          const l = lead[shared.of[b]!]!;
          s.past = l.past;
          s.lead = l.lead;
          s.prefix = l.prefix;
        });
      }

      // 3. steered passes
      for (let step = 0; ; step++) {
        if (aborted()) {
          for (const s of active) s.done ??= 'abort';
          return;
        }
        for (const s of active) {
          if (s.policy && !s.done) {
            const ctx: StepContext = { step, promptResidual: s.promptResidual, previousResidual: s.previous, generated: [...s.generated] };
            const m = s.policy(ctx);
            if (m !== null) this.checkMatrix(m, `decode rows[${s.index}] policy steering at step ${step}`);
            s.matrix = m;
            if (step === 0) s.firstSteering = m;
          }
        }
        const capture = active.some((s) => !s.done && (s.policy || s.row.capture === 'all'));
        const out = reuse ?? (await this.pass(active, kv, T, !(mode === 'new' && step === 0), capture, opts));
        reuse = null;
        const logits = out['logits']!;
        const res = capture ? out[RESIDUAL] : undefined;
        for (let b = 0; b < active.length; b++) {
          const s = active[b]!;
          if (s.done) continue;
          const p = this.lastPos(s);
          if (res) {
            const r = this.residualAt(res, b, p);
            s.previous = r;
            if (s.row.capture === 'all') {
              s.tokenRes.push(r);
              opts.onResidual?.(s.index, s.tokenRes.length - 1, r);
            }
          }
          const token = this.pick(s, logits, b, p);
          s.generated.push(token);
          opts.onToken?.(s.index, token);
          if (this.g.eosTokenIds.includes(token)) s.done = 'eos';
          else if (s.generated.length >= s.maxNew) s.done = 'length';
        }
        const next = this.kvFrom(out);
        retire(kv, next);
        kv = next;
        T = this.advance(active, T);
        if (active.every((s) => s.done)) return;
        for (const s of active) s.chunk = [s.done ? this.pad : s.generated.at(-1)!];
        if (active.some((s) => s.done)) {
          const compacted = this.compact(active, kv, T);
          if (compacted) ({ active, kv, T } = compacted);
        }
      }
    } finally {
      retire(kv, null);
    }
  }

  /** Width (tokens per row) of the last pass run: set by pass(). */
  private passWidth = 1;

  /** Position of the row's newest token in the output of the last pass (its chunk is that pass's input). */
  private lastPos(s: RowState): number {
    return this.leftPadding ? this.passWidth - 1 : s.chunk.length - 1;
  }

  /** Builds the feeds of one pass over the rows' chunks on a cache of T columns and runs it. */
  private async pass(rows: RowState[], kv: Record<string, OrtTensorLike> | null, T: number, steered: boolean, capture: boolean, opts: DecodeOptions, logits = true) {
    if (opts.signal) await yieldToEventLoop();
    const stats = opts.stats;
    const B = rows.length;
    const C = Math.max(...rows.map((s) => s.chunk.length));
    if (C > 1 && T > 0) throw new Error('decode: internal error: a multi-token pass on a non-empty cache');
    this.passWidth = C;
    const W = T + C;
    const ids = new BigInt64Array(B * C).fill(BigInt(this.pad));
    const mask = new BigInt64Array(B * W);
    const pos = this.leftPadding ? new BigInt64Array(B * C).fill(1n) : null;
    for (let b = 0; b < B; b++) {
      const s = rows[b]!;
      const c = s.chunk.length;
      if (this.leftPadding) {
        const off = C - c;
        for (let i = 0; i < c; i++) {
          ids[b * C + off + i] = BigInt(s.chunk[i]!);
          pos![b * C + off + i] = BigInt(s.past + i);
        }
        mask.fill(1n, b * W + s.lead, b * W + T);
        mask.fill(1n, b * W + T + off, (b + 1) * W);
      } else {
        for (let i = 0; i < c; i++) ids[b * C + i] = BigInt(s.chunk[i]!);
        mask.fill(1n, b * W, b * W + s.past + c);
      }
    }
    const t = this.g.tensor;
    const feeds: OrtFeeds = {
      input_ids: t('int64', ids, [B, C]),
      attention_mask: t('int64', mask, [B, W]),
    };
    if (pos) feeds['position_ids'] = t('int64', pos, [B, C]);
    if (this.g.session.inputNames.includes('use_cache_branch')) {
      this.cacheBranch ??= [t('bool', Uint8Array.of(0), [1]), t('bool', Uint8Array.of(1), [1])];
      feeds['use_cache_branch'] = this.cacheBranch[T > 0 ? 1 : 0];
    }
    // A pass that fetches no logits (a prefill) runs the head on its last position only (the patch's logits_from).
    if (this.hasLogitsFrom) feeds[LOGITS_FROM_INPUT] = logits || capture ? this.fromZero! : t('int64', BigInt64Array.of(BigInt(C - 1)), [1]);
    if (kv) Object.assign(feeds, kv);
    else {
      const empty = this.kvType === 'float16' ? new Uint16Array(0) : new Float32Array(0);
      for (const [p] of this.kvPairs) feeds[p] = t(this.kvType, empty, [B, this.kvHeads, 0, this.headDim]);
    }
    const perRow = steered && rows.some((s) => s.matrix || s.inputs);
    feeds['steering'] = perRow ? this.rowsTensor(rows, (s) => s.matrix) : this.zeros();
    for (const name of this.extraInputs) feeds[name] = perRow ? this.rowsTensor(rows, (s) => s.inputs?.[name] ?? null) : this.zeros();

    const lean = !capture && this.g.lean ? this.g.lean : null;
    const t0 = performance.now();
    const fetches = capture ? this.fetchCapture : logits ? this.fetchLean : this.fetchKv;
    const out = await this.runSession(lean ?? this.g.session, feeds, fetches);
    if (stats) {
      stats.runMs += performance.now() - t0;
      stats.passes++;
      if (capture) stats.capturedPasses++;
    }
    return out;
  }

  /** [1, L, H] zeros (broadcast over the batch), made once. */
  private zeros(): OrtTensorLike {
    this.zeroRows ??= this.g.tensor('float32', new Float32Array(this.L * this.H), [1, this.L, this.H]);
    return this.zeroRows;
  }

  private rowsTensor(rows: RowState[], get: (s: RowState) => Float32Array | null): OrtTensorLike {
    const lh = this.L * this.H;
    const data = new Float32Array(rows.length * lh);
    rows.forEach((s, b) => {
      const m = get(s);
      if (m) data.set(m, b * lh);
    });
    return this.g.tensor('float32', data, [rows.length, this.L, this.H]);
  }

  private kvFrom(out: Record<string, OrtTensorLike>): Record<string, OrtTensorLike> {
    const kv: Record<string, OrtTensorLike> = {};
    for (const [p, o] of this.kvPairs) {
      const v = out[o];
      if (!v) throw new Error(`decode: the session returned no ${o}`);
      kv[p] = v;
    }
    return kv;
  }

  /**
   * After a pass: every row's chunk is in the cache. Returns the new cache width. `carried`: the chunks are a cache
   * built from handed-in prefixes (kvFromPrefixes), laid out as a prefill pass over them would be.
   */
  private advance(rows: RowState[], T: number, carried = false): number {
    if (carried) this.passWidth = Math.max(...rows.map((s) => s.chunk.length));
    const C = this.passWidth;
    for (const s of rows) {
      if (this.leftPadding && T === 0) s.lead = C - s.chunk.length;
      s.past += s.chunk.length;
    }
    return T + C;
  }

  /** Float32 view of one row's logits at position p (fp16 logits converted); processors applied; token chosen. */
  private pick(s: RowState, logits: OrtTensorLike, b: number, p: number): number {
    const [, S, V] = logits.dims as [number, number, number];
    const off = (b * S + p) * V;
    let row: Float32Array;
    if (logits.type === 'float16') row = fromFloat16Array((logits.data as Uint16Array).subarray(off, off + V));
    else row = (logits.data as Float32Array).subarray(off, off + V);
    this.g.logitsProcessors?.([...s.row.ids, ...s.generated], row, s.row.ids.length);
    return s.draw ? s.draw(row) : argmax(row);
  }

  /** [L+1, H] residual of batch row b at position p of a [B, L+1, S, H] residual_stream. */
  private residualAt(res: OrtTensorLike, b: number, p: number): Float32Array {
    const [, L1, S, H] = res.dims as [number, number, number, number];
    const out = new Float32Array(L1 * H);
    const fp16 = res.type === 'float16';
    for (let k = 0; k < L1; k++) {
      const off = ((b * L1 + k) * S + p) * H;
      if (fp16) out.set(fromFloat16Array((res.data as Uint16Array).subarray(off, off + H)), k * H);
      else out.set((res.data as Float32Array).subarray(off, off + H), k * H);
    }
    return out;
  }

  /**
   * How the lead rows are split for the unsteered prefill and the observation: one part (all rows at once), except on
   * left-padded graphs with a CPU cache, where rows are grouped by prompt length. Left padding changes the width of
   * every attention reduction, so a padded row's residuals differ from its batch-1 residuals in the last bits, and the
   * observation feeds the controller (s, w and the patch a record carries); prompts of one length need no padding.
   * The parts' caches are then joined into one left-padded cache (mergeLeft) for the batched steered passes.
   */
  private prefillParts(lead: readonly RowState[]): number[][] {
    const all = lead.map((_, i) => i);
    if (!this.leftPadding || this.g.cacheOnDevice || lead.length === 1) return [all];
    const byLength = new Map<string, number[]>();
    for (const i of all) {
      // rows with a usable prefix handed in form their own parts (they skip the prefill pass)
      const n = `${lead[i]!.row.ids.length}${this.usablePrefix(lead[i]!) ? '+' : ''}`;
      const part = byLength.get(n);
      if (part) part.push(i);
      else byLength.set(n, [i]);
    }
    return [...byLength.values()];
  }

  /** The parts' caches (each [rows of the part, heads, T_part, head]) as one left-padded cache over the lead rows. */
  private mergeLeft(parts: { part: number[]; kv: Record<string, OrtTensorLike> | null; T: number }[], lead: readonly RowState[]): { kv: Record<string, OrtTensorLike> | null; T: number } {
    const T = Math.max(...parts.map((p) => p.T));
    if (T === 0) return { kv: null, T: 0 };
    const [nh, hd] = [this.kvHeads, this.headDim];
    const kv: Record<string, OrtTensorLike> = {};
    for (const [name] of this.kvPairs) {
      const dst = this.kvType === 'float16' ? new Uint16Array(lead.length * nh * T * hd) : new Float32Array(lead.length * nh * T * hd);
      for (const p of parts) {
        const src = p.kv![name]!.data as Float32Array | Uint16Array;
        p.part.forEach((i, j) => copyColumns(src, { row: j, width: p.T, at: 0 }, dst, { row: i, width: T, at: T - p.T }, p.T, nh, hd));
      }
      kv[name] = this.g.tensor(this.kvType, dst, [lead.length, nh, T, hd]);
    }
    for (const p of parts) p.part.forEach((i) => (lead[i]!.lead = T - p.T));
    return { kv, T };
  }

  /**
   * Whether a prefill part can start from the prefixes handed in instead (DecodeRow.prefix): every row of it has one
   * for its own prompt, in this graph's cache shape and type, and the cache lives in CPU memory. All or nothing per
   * part: prefillParts puts rows with and without a prefix in different parts where padding allows (left padding).
   */
  private carriedPart(ps: readonly RowState[]): boolean {
    return !this.g.cacheOnDevice && ps.every((s) => this.usablePrefix(s));
  }

  private usablePrefix(s: RowState): boolean {
    const p = s.row.prefix;
    const n = s.row.ids.length - 1;
    if (!p || n < 1 || p.ids.length !== n || p.ids.some((id, i) => id !== s.row.ids[i])) return false;
    return this.kvPairs.every(([name]) => {
      const t = p.kv[name];
      if (!t || t.type !== this.kvType || t.dims.length !== 4) return false;
      const [b, heads, cols, hd] = t.dims as [number, number, number, number];
      return b === 1 && heads === this.kvHeads && cols === n && hd === this.headDim && t.data.length === heads * n * hd;
    });
  }

  /**
   * The cache a prefill of the part's chunks would leave, built from the rows' prefixes: [rows, heads, C, head], each
   * row's columns where that pass puts them (left padding: at the end; right padding: at the front), zeros elsewhere
   * (padding columns are masked, never attended).
   */
  private kvFromPrefixes(ps: readonly RowState[]): Record<string, OrtTensorLike> {
    const C = Math.max(...ps.map((s) => s.chunk.length));
    const [nh, hd] = [this.kvHeads, this.headDim];
    const kv: Record<string, OrtTensorLike> = {};
    for (const [name] of this.kvPairs) {
      const dst = this.kvType === 'float16' ? new Uint16Array(ps.length * nh * C * hd) : new Float32Array(ps.length * nh * C * hd);
      ps.forEach((s, j) => {
        const n = s.chunk.length;
        copyColumns(s.row.prefix!.kv[name]!.data, { row: 0, width: n, at: 0 }, dst, { row: j, width: C, at: this.leftPadding ? C - n : 0 }, n, nh, hd);
      });
      kv[name] = this.g.tensor(this.kvType, dst, [ps.length, nh, C, hd]);
    }
    return kv;
  }

  /** Row j's real prefix columns, copied out of its prefill's cache (in CPU memory): see PromptPrefix. */
  private prefixOf(kv: Record<string, OrtTensorLike>, j: number, s: RowState): PromptPrefix | null {
    const n = s.row.ids.length - 1;
    const start = this.leftPadding ? s.lead : 0;
    const out: PromptPrefix['kv'] = {};
    for (const [name, t] of Object.entries(kv)) {
      if ((t.location ?? 'cpu') !== 'cpu') return null;
      const [, heads, T, hd] = t.dims as [number, number, number, number];
      const src = t.data as Float32Array | Uint16Array;
      const dst = new (src.constructor as { new (n: number): Float32Array | Uint16Array })(heads * n * hd);
      copyColumns(src, { row: j, width: T, at: start }, dst, { row: 0, width: n, at: 0 }, n, heads, hd);
      out[name] = { type: t.type as 'float32' | 'float16', data: dst, dims: [1, heads, n, hd] };
    }
    return { ids: s.row.ids.slice(0, -1), kv: out };
  }

  /** Outputs of a pass over the lead rows, copied to every row (row b gets lead row of[b]); CPU tensors only. */
  private expandRows(out: Record<string, OrtTensorLike>, of: readonly number[]): Record<string, OrtTensorLike> {
    const next: Record<string, OrtTensorLike> = {};
    for (const [name, t] of Object.entries(out)) {
      if ((t.location ?? 'cpu') !== 'cpu') throw new Error(`decode: ${name} is in ${t.location} memory, so rows that share a prompt cannot share its cache; set cacheOnDevice`);
      const src = t.data as Float32Array | Uint16Array;
      const size = src.length / t.dims[0]!;
      const dst = new (src.constructor as { new (n: number): Float32Array | Uint16Array })(of.length * size);
      of.forEach((k, b) => dst.set(src.subarray(k * size, (k + 1) * size), b * size));
      next[name] = this.g.tensor(t.type as 'float32' | 'float16', dst, [of.length, ...t.dims.slice(1)]);
    }
    return next;
  }

  /**
   * Drops finished rows from a CPU cache, and the padding columns no remaining row needs (left padding: leading
   * columns that are padding in every remaining row; right padding: columns past the longest remaining row).
   * null when the cache is not in CPU memory (finished rows then ride along).
   */
  private compact(rows: RowState[], kv: Record<string, OrtTensorLike>, T: number): { active: RowState[]; kv: Record<string, OrtTensorLike>; T: number } | null {
    if (Object.values(kv).some((t) => (t.location ?? 'cpu') !== 'cpu')) return null;
    const keep: number[] = [];
    rows.forEach((s, b) => !s.done && keep.push(b));
    const kept = keep.map((b) => rows[b]!);
    const start = this.leftPadding ? Math.min(...kept.map((s) => s.lead)) : 0;
    const T2 = this.leftPadding ? T - start : Math.max(...kept.map((s) => s.past));
    const [nh, hd] = [this.kvHeads, this.headDim];
    const next: Record<string, OrtTensorLike> = {};
    for (const [name, t] of Object.entries(kv)) {
      const src = t.data as Float32Array | Uint16Array;
      const dst = new (src.constructor as { new (n: number): Float32Array | Uint16Array })(keep.length * nh * T2 * hd);
      keep.forEach((b, i) => copyColumns(src, { row: b, width: T, at: start }, dst, { row: i, width: T2, at: 0 }, T2, nh, hd));
      next[name] = this.g.tensor(this.kvType, dst, [keep.length, nh, T2, hd]);
    }
    if (this.leftPadding) for (const s of kept) s.lead -= start;
    return { active: kept, kv: next, T: T2 };
  }
}

/**
 * Copies n cache columns of one row between caches laid out [rows, heads, width, head size]: from columns at..at+n of
 * `a.row` in `src` to columns at..at+n of `b.row` in `dst`, every head. What joining, cutting and handing out caches
 * all come down to.
 */
function copyColumns(src: Float32Array | Uint16Array, a: { row: number; width: number; at: number }, dst: Float32Array | Uint16Array, b: { row: number; width: number; at: number }, n: number, heads: number, hd: number): void {
  for (let h = 0; h < heads; h++) {
    const from = ((a.row * heads + h) * a.width + a.at) * hd;
    dst.set(src.subarray(from, from + n * hd), ((b.row * heads + h) * b.width + b.at) * hd);
  }
}

/**
 * Rows whose prompts (token ids) are equal: the first row of each prompt leads (runs the prefill and the observation
 * for the others), of[b] = the index in `lead` of row b's prompt. null when every prompt is distinct.
 */
function sharedPrompts(rows: readonly RowState[]): { lead: RowState[]; of: number[] } | null {
  const index = new Map<string, number>();
  const lead: RowState[] = [];
  const of = rows.map((s) => {
    const key = s.row.ids.join(',');
    let k = index.get(key);
    if (k === undefined) {
      k = lead.length;
      index.set(key, k);
      lead.push(s);
    }
    return k;
  });
  return lead.length < rows.length ? { lead, of } : null;
}
