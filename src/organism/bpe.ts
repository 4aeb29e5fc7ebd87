/**
 * A small byte-level BPE tokenizer trained on the organism's own training text, written in the HF `tokenizers`
 * format that transformers.js reads (ByteLevel pre-tokenizer with the GPT-2 split regex, BPE model, ByteLevel
 * decoder). The id layout and the special tokens are the test-model tokenizer's (src/core/onnx/testmodel/tokenizer.ts):
 * ids 0..2 <|endoftext|> <|im_start|> <|im_end|>, ids 3..258 the byte alphabet, then one id per trained merge.
 * That writer enumerates merges without training, so this module trains them and writes the same files.
 */
import {
  BASE_VOCAB_SIZE,
  BYTE_TOKEN_OFFSET,
  IM_END,
  IM_START,
  SPECIAL_TOKENS,
  byteToUnicode,
  tokenizerFilesFromBpe,
} from '../core/onnx/testmodel/tokenizer.js';

/** GPT-2's pre-tokenizer split, as HF ByteLevel(use_regex=true) and transformers.js apply it. */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

const ALPHABET = byteToUnicode();
const CHAR_OF_BYTE: string[] = (() => {
  const m: string[] = new Array(256);
  for (const e of ALPHABET) m[e.byte] = e.char;
  return m;
})();
const BYTE_OF_CHAR = new Map(ALPHABET.map((e) => [e.char, e.byte]));
const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

/** Text piece -> its bytes as byte-level alphabet characters. */
function toByteChars(piece: string): string[] {
  return Array.from(utf8.encode(piece), (b) => CHAR_OF_BYTE[b]);
}

export function preTokenize(text: string): string[] {
  return text.match(GPT2_SPLIT) ?? [];
}

export interface TrainedBpe {
  vocab: Map<string, number>;
  merges: [string, string][];
}

/**
 * Classic BPE training: count pre-tokenized words, then repeatedly merge the most frequent adjacent pair (ties broken
 * by the pair's text, so the result is deterministic) until the vocabulary holds `vocabSize` tokens.
 */
export function trainBpe(texts: Iterable<string>, vocabSize: number): TrainedBpe {
  if (!Number.isInteger(vocabSize) || vocabSize <= BASE_VOCAB_SIZE) {
    throw new Error(`trainBpe: vocabSize must be an integer > ${BASE_VOCAB_SIZE} (specials + 256 bytes), got ${vocabSize}`);
  }
  const wordCounts = new Map<string, number>();
  for (const t of texts) for (const w of preTokenize(t)) wordCounts.set(w, (wordCounts.get(w) ?? 0) + 1);
  const words: { syms: string[]; n: number }[] = [...wordCounts.entries()]
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([w, n]) => ({ syms: toByteChars(w), n }));

  const vocab = new Map<string, number>();
  SPECIAL_TOKENS.forEach((t, i) => vocab.set(t, i));
  ALPHABET.forEach((e, i) => vocab.set(e.char, BYTE_TOKEN_OFFSET + i));
  const merges: [string, string][] = [];
  while (vocab.size < vocabSize) {
    const pairs = new Map<string, number>();
    for (const { syms, n } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const k = `${syms[i]}\u0000${syms[i + 1]}`;
        pairs.set(k, (pairs.get(k) ?? 0) + n);
      }
    }
    let best: string | null = null;
    let bestN = 0;
    for (const [k, n] of pairs) if (n > bestN || (n === bestN && best !== null && k < best)) [best, bestN] = [k, n];
    if (best === null || bestN < 2) break; // nothing left worth merging: a smaller vocabulary is still valid
    const [a, b] = best.split('\u0000') as [string, string];
    const merged = a + b;
    merges.push([a, b]);
    vocab.set(merged, vocab.size);
    for (const w of words) {
      const s = w.syms;
      if (s.length < 2) continue;
      const out: string[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          out.push(merged);
          i++;
        } else out.push(s[i]);
      }
      w.syms = out;
    }
  }
  return { vocab, merges };
}

/** Encoder for a trained BPE; produces the ids transformers.js's tokenizer produces for the same files. */
export class BpeTokenizer {
  readonly vocab: Map<string, number>;
  readonly merges: [string, string][];
  private readonly rank: Map<string, number>;
  private readonly idToToken: string[];
  private readonly cache = new Map<string, number[]>();

  constructor(bpe: TrainedBpe) {
    this.vocab = bpe.vocab;
    this.merges = bpe.merges;
    this.rank = new Map(bpe.merges.map(([a, b], i) => [`${a}\u0000${b}`, i]));
    this.idToToken = [];
    for (const [t, id] of bpe.vocab) this.idToToken[id] = t;
  }

  get size(): number {
    return this.vocab.size;
  }

  private encodeWord(word: string): number[] {
    const hit = this.cache.get(word);
    if (hit) return hit;
    let syms = toByteChars(word);
    for (;;) {
      let bestRank = Infinity;
      let bestAt = -1;
      for (let i = 0; i + 1 < syms.length; i++) {
        const r = this.rank.get(`${syms[i]}\u0000${syms[i + 1]}`);
        if (r !== undefined && r < bestRank) [bestRank, bestAt] = [r, i];
      }
      if (bestAt < 0) break;
      const [a, b] = this.merges[bestRank];
      const out: string[] = [];
      for (let i = 0; i < syms.length; i++) {
        if (i + 1 < syms.length && syms[i] === a && syms[i + 1] === b) {
          out.push(a + b);
          i++;
        } else out.push(syms[i]);
      }
      syms = out;
    }
    const ids = syms.map((s) => {
      const id = this.vocab.get(s);
      if (id === undefined) throw new Error(`BpeTokenizer: symbol ${JSON.stringify(s)} missing from the vocabulary`);
      return id;
    });
    this.cache.set(word, ids);
    return ids;
  }

  /** Plain text (special-token strings inside it are split out and mapped to their ids, as HF does). */
  encode(text: string): number[] {
    const ids: number[] = [];
    const parts = text.split(/(<\|endoftext\|>|<\|im_start\|>|<\|im_end\|>)/);
    for (const part of parts) {
      if (part === '') continue;
      const special = SPECIAL_TOKENS.indexOf(part as (typeof SPECIAL_TOKENS)[number]);
      if (special >= 0) ids.push(special);
      else for (const w of preTokenize(part)) ids.push(...this.encodeWord(w));
    }
    return ids;
  }

  /** Ids back to text; special tokens are dropped when `skipSpecial`. */
  decode(ids: readonly number[], skipSpecial = true): string {
    const bytes: number[] = [];
    let out = '';
    const flush = () => {
      out += utf8Decoder.decode(new Uint8Array(bytes));
      bytes.length = 0;
    };
    for (const id of ids) {
      const tok = this.idToToken[id];
      if (tok === undefined) throw new Error(`BpeTokenizer.decode: id ${id} outside the vocabulary of ${this.size}`);
      if (id < BYTE_TOKEN_OFFSET) {
        flush();
        if (!skipSpecial) out += tok;
        continue;
      }
      for (const ch of tok) bytes.push(BYTE_OF_CHAR.get(ch)!);
    }
    flush();
    return out;
  }
}

export interface ChatMessage {
  role: string;
  content: string;
}

/** ChatML exactly as CHAT_TEMPLATE renders it; `addGenerationPrompt` appends "<|im_start|>assistant\n". */
export function renderChat(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string {
  let s = '';
  for (const m of messages) s += `${IM_START}${m.role}\n${m.content}${IM_END}\n`;
  if (addGenerationPrompt) s += `${IM_START}assistant\n`;
  return s;
}

/** tokenizer.json, tokenizer_config.json and special_tokens_map.json for a trained BPE (the test models' layout). */
export function tokenizerFiles(bpe: TrainedBpe, maxLength: number): Record<'tokenizer.json' | 'tokenizer_config.json' | 'special_tokens_map.json', unknown> {
  return tokenizerFilesFromBpe(bpe.vocab, bpe.merges, maxLength);
}

/** Rebuilds a trained BPE from a tokenizer.json written by tokenizerFiles (for evaluation and tests). */
export function bpeFromTokenizerJson(json: unknown): TrainedBpe {
  const model = (json as { model?: { vocab?: Record<string, number>; merges?: string[] } })?.model;
  if (!model || typeof model.vocab !== 'object' || !Array.isArray(model.merges)) {
    throw new Error('bpeFromTokenizerJson: expected a tokenizer.json with model.vocab and model.merges');
  }
  const vocab = new Map(Object.entries(model.vocab).sort((a, b) => a[1] - b[1]));
  const merges = model.merges.map((m, i) => {
    const sp = m.indexOf(' ');
    if (sp <= 0) throw new Error(`bpeFromTokenizerJson: merge ${i} ${JSON.stringify(m)} is not "left right"`);
    return [m.slice(0, sp), m.slice(sp + 1)] as [string, string];
  });
  return { vocab, merges };
}
