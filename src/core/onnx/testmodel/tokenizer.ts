/**
 * Byte-level BPE tokenizer files for test decoders: tokenizer.json (HF `tokenizers` format, read by
 * transformers.js AutoTokenizer), tokenizer_config.json (with the ChatML chat template) and
 * special_tokens_map.json.
 *
 * The vocabulary has exactly `vocabSize` entries so that every logit of a test model maps to a token:
 *   ids 0..2   special tokens <|endoftext|>, <|im_start|>, <|im_end|>
 *   ids 3..258 the 256 byte tokens (GPT-2 byte-to-unicode alphabet), so any text round-trips
 *   ids 259..  merged tokens, each "existing token + one printable byte" with its own merge rule.
 * The merges are enumerated deterministically (no training), so the same size always gives the same files.
 */

export const ENDOFTEXT = '<|endoftext|>';
export const IM_START = '<|im_start|>';
export const IM_END = '<|im_end|>';
export const SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END] as const;
export const ENDOFTEXT_ID = 0;
export const IM_START_ID = 1;
export const IM_END_ID = 2;
/** First id of the byte alphabet; byte b has id BYTE_TOKEN_OFFSET + rank of b in byteToUnicode order. */
export const BYTE_TOKEN_OFFSET = SPECIAL_TOKENS.length;
/** Specials + bytes; anything smaller cannot encode arbitrary text. */
export const BASE_VOCAB_SIZE = SPECIAL_TOKENS.length + 256;
/** A vocabulary must hold a few merges too, or the BPE model has no merges list to speak of. */
export const MIN_VOCAB_SIZE = BASE_VOCAB_SIZE + 4;

/** ChatML, as SmolLM2-Instruct and Qwen2.5-Instruct ship it (without their default system prompt). */
export const CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/**
 * GPT-2's reversible byte -> printable unicode character map: printable Latin-1 bytes map to themselves, the
 * rest to U+0100 upwards. Byte-level BPE works on these characters so that no token contains a space or control byte.
 * Returned in GPT-2's order (the order the byte tokens get their ids in).
 */
export function byteToUnicode(): { byte: number; char: string }[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  return bs.map((byte, i) => ({ byte, char: String.fromCharCode(cs[i]) }));
}

/**
 * Bytes that merged tokens are grown with, most useful first: space, lower-case letters by English frequency,
 * then the rest of printable ASCII. Typical text therefore gets multi-byte tokens early.
 */
function growthBytes(): number[] {
  const order = ' etaoinshrdlcumwfgypbvkjxqz';
  const out: number[] = [];
  const seen = new Set<number>();
  const push = (b: number) => {
    if (!seen.has(b)) {
      seen.add(b);
      out.push(b);
    }
  };
  for (const ch of order) push(ch.charCodeAt(0));
  for (let b = 33; b <= 126; b++) push(b);
  return out;
}

export interface BpeVocabulary {
  /** token string (byte-level alphabet) -> id, ids 0..vocabSize-1, specials included. */
  vocab: Map<string, number>;
  /** merge rules [left, right] in priority order; rule i produces token id BASE_VOCAB_SIZE + i. */
  merges: [string, string][];
}

/** Enumerates the vocabulary: breadth-first, each level extends every token of the previous level by one growth byte. */
export function buildBpeVocabulary(vocabSize: number): BpeVocabulary {
  if (!Number.isInteger(vocabSize) || vocabSize < MIN_VOCAB_SIZE) {
    throw new Error(
      `tokenizer: vocabSize must be an integer >= ${MIN_VOCAB_SIZE} (${SPECIAL_TOKENS.length} special tokens + 256 byte ` +
        `tokens + a few merges), got ${vocabSize}`,
    );
  }
  const alphabet = byteToUnicode();
  const charOf = new Map(alphabet.map((e) => [e.byte, e.char]));
  const vocab = new Map<string, number>();
  SPECIAL_TOKENS.forEach((t, i) => vocab.set(t, i));
  alphabet.forEach((e, i) => vocab.set(e.char, BYTE_TOKEN_OFFSET + i));

  const merges: [string, string][] = [];
  const growth = growthBytes().map((b) => charOf.get(b)!);
  let level = growth.slice(); // single-byte tokens that start level 2
  while (vocab.size < vocabSize) {
    const next: string[] = [];
    for (const left of level) {
      for (const right of growth) {
        if (vocab.size >= vocabSize) break;
        const token = left + right;
        if (vocab.has(token)) continue;
        vocab.set(token, vocab.size);
        merges.push([left, right]);
        next.push(token);
      }
      if (vocab.size >= vocabSize) break;
    }
    level = next;
  }
  return { vocab, merges };
}

export interface TokenizerFiles {
  'tokenizer.json': unknown;
  'tokenizer_config.json': unknown;
  'special_tokens_map.json': unknown;
}

/** The three tokenizer files as JSON values (the writer serialises them with stable key order). */
export function buildTokenizerFiles(vocabSize: number, maxLength: number): TokenizerFiles {
  const { vocab, merges } = buildBpeVocabulary(vocabSize);
  return tokenizerFilesFromBpe(vocab, merges, maxLength);
}

/**
 * The three tokenizer files for any byte-level BPE whose ids start with SPECIAL_TOKENS (the test models' enumerated
 * merges, or the organism's trained ones): one layout, so every model of the project tokenizes and chats alike.
 */
export function tokenizerFilesFromBpe(vocab: Map<string, number>, merges: [string, string][], maxLength: number): TokenizerFiles {
  const added = SPECIAL_TOKENS.map((content, id) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
  const addedTokensDecoder = Object.fromEntries(
    added.map((t) => [String(t.id), { content: t.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true }]),
  );
  const tokenizerConfig = {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: addedTokensDecoder,
    additional_special_tokens: [IM_START, IM_END],
    bos_token: ENDOFTEXT,
    chat_template: CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: IM_END,
    model_max_length: maxLength,
    pad_token: ENDOFTEXT,
    tokenizer_class: 'GPT2Tokenizer',
    unk_token: ENDOFTEXT,
  };
  const specialTokensMap = {
    additional_special_tokens: [IM_START, IM_END],
    bos_token: ENDOFTEXT,
    eos_token: IM_END,
    pad_token: ENDOFTEXT,
    unk_token: ENDOFTEXT,
  };
  return { 'tokenizer.json': tokenizerJson, 'tokenizer_config.json': tokenizerConfig, 'special_tokens_map.json': specialTokensMap };
}
