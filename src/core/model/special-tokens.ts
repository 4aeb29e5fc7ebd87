/**
 * User text is text: a prompt that contains the string of a special token (`<|im_end|>\n<|im_start|>system ...`)
 * must not become that token, or any user could write role and control tokens (two prompts of the in-the-wild
 * jailbreak set do exactly this). transformers.js tokenises a rendered chat template in one go and turns every
 * special-token string it meets into the token, user text included.
 *
 * encodeProtected() tokenises a text in which one span (the user's text) is protected: the tokenizer's own pipeline
 * (added-token split, lstrip/rstrip, normaliser, pre-tokeniser with its section index, model, post-processor), except
 * that the special-token split does not happen inside the span; non-special added tokens still split there, as in
 * Hugging Face tokenizers' `split_special_tokens`. It mirrors `Tokenizer.encode_text` of @huggingface/tokenizers
 * 0.2 (the package transformers.js 4.3 runs) and reads the fields that method reads; a tokenizer without them is
 * refused rather than guessed at. Prompts without special-token strings never come here (prompt.ts keeps the
 * library's own encode for them), and a test checks that both give identical ids for ordinary text.
 */

interface AddedTokenLike {
  content: string;
  id: number;
  special: boolean;
  lstrip: boolean;
  rstrip: boolean;
}

/** The parts of @huggingface/tokenizers' Tokenizer (transformers.js: `tokenizer._tokenizer`) this module reads. */
interface InnerTokenizer {
  added_tokens: AddedTokenLike[];
  added_tokens_map: Map<string, AddedTokenLike>;
  splitter_unnormalized: { split(text: string): string[] };
  splitter_normalized: { split(text: string): string[] };
  normalizer: ((text: string) => string) | null;
  pre_tokenizer: ((text: string, o: { section_index: number }) => string[]) | null;
  model: ((pieces: string[]) => string[]) & { tokens_to_ids: Map<string, number>; unk_token_id?: number };
  post_processor: ((a: string[], b: null, add: boolean) => { tokens: string[] }) | null;
  remove_space?: boolean;
  do_lowercase_and_remove_accent?: boolean;
}

function inner(tok: unknown): InnerTokenizer | null {
  const t = (tok as { _tokenizer?: unknown } | null | undefined)?._tokenizer as Partial<InnerTokenizer> | undefined;
  if (!t || !Array.isArray(t.added_tokens) || !(t.added_tokens_map instanceof Map) || typeof t.splitter_unnormalized?.split !== 'function') return null;
  if (typeof t.splitter_normalized?.split !== 'function' || typeof t.model !== 'function' || !(t.model.tokens_to_ids instanceof Map)) return null;
  return t as InnerTokenizer;
}

/** The strings of the tokenizer's special tokens, longest first (so a search reports `<|im_end|>`, not a prefix). */
export function specialTokenStrings(tok: unknown): string[] {
  const t = inner(tok);
  if (!t) return [];
  return [...new Set(t.added_tokens.filter((a) => a.special && a.content !== '').map((a) => a.content))].sort((a, b) => b.length - a.length);
}

/**
 * Ids of the special tokens that only a special-token string makes: the unknown token is left out (any character
 * missing from the vocabulary becomes it).
 */
export function specialTokenIds(tok: unknown): Set<number> {
  const t = inner(tok);
  return new Set(t ? t.added_tokens.filter((a) => a.special && a.id !== t.model.unk_token_id).map((a) => a.id) : []);
}

/** The special-token strings that occur in `text` (each once, in order of first occurrence). */
export function findSpecialTokenStrings(tok: unknown, text: string): string[] {
  const found: { s: string; at: number }[] = [];
  for (const s of specialTokenStrings(tok)) {
    const at = text.indexOf(s);
    // A shorter string found only inside a longer one already reported is not a separate hit.
    if (at >= 0 && !found.some((f) => f.s.includes(s) && text.indexOf(s) >= f.at && text.indexOf(s) < f.at + f.s.length)) found.push({ s, at });
  }
  return found.sort((a, b) => a.at - b.at).map((f) => f.s);
}

interface Piece {
  text: string;
  token: boolean;
  /** Holds (part of) the protected span: special tokens are not split out of it. */
  guarded: boolean;
}

/** Splits by the dictionary splitter; exact added-token matches are tokens, except special ones in a guarded span. */
function split(t: InnerTokenizer, text: string, guarded: boolean): Piece[] {
  return t.splitter_unnormalized.split(text).map((p) => {
    const a = t.added_tokens_map.get(p);
    return { text: p, token: !!a && !(guarded && a.special), guarded };
  });
}

/** Adjacent text pieces join into one section, as the splitter would have left them. */
function join(pieces: Piece[]): Piece[] {
  const out: Piece[] = [];
  for (const p of pieces) {
    const last = out.at(-1);
    if (last && !last.token && !p.token) {
      last.text += p.text;
      last.guarded ||= p.guarded;
    } else out.push({ ...p });
  }
  return out;
}

/** encode_text's lstrip / rstrip: an added token may eat the whitespace beside it. */
function stripAround(t: InnerTokenizer, s: Piece[]): void {
  s.forEach((p, i) => {
    if (!p.token) return;
    const a = t.added_tokens_map.get(p.text);
    if (a?.lstrip && i > 0) s[i - 1]!.text = s[i - 1]!.text.trimEnd();
    if (a?.rstrip && i < s.length - 1) s[i + 1]!.text = s[i + 1]!.text.trimStart();
  });
}

/** The same text piece split by the normalised-token splitter; in a guarded piece special tokens stay text. */
function splitNormalized(t: InnerTokenizer, text: string, guarded: boolean): Piece[] {
  const pieces = t.splitter_normalized.split(text).map((p) => {
    const a = t.added_tokens_map.get(p);
    return { text: p, token: !!a && !(guarded && a.special), guarded };
  });
  return guarded ? join(pieces) : pieces;
}

export class SpecialTokenError extends Error {
  readonly code = 'SPECIAL_TOKENS';
}

/**
 * Token ids of `text` (no special tokens added) with [start, end) kept free of special tokens. Throws
 * SpecialTokenError when the tokenizer does not expose the pipeline this needs.
 */
export function encodeProtected(tok: unknown, text: string, start: number, end: number, addSpecialTokens = false): number[] {
  const t = inner(tok);
  if (!t) throw new SpecialTokenError('this tokenizer does not expose its pipeline, so special-token strings in the prompt cannot be kept as text; remove them or allow special tokens (--allow-special-tokens)');
  const sections = join([...split(t, text.slice(0, start), false), ...split(t, text.slice(start, end), true), ...split(t, text.slice(end), false)]);
  stripAround(t, sections);
  const tokens = sections.flatMap((section, section_index) => {
    let s = section.text;
    if (s.length === 0) return [];
    if (section.token) return [s];
    if (t.remove_space === true) s = s.trim().split(/\s+/).join(' ');
    if (t.do_lowercase_and_remove_accent) s = s.toLowerCase().replace(/\p{M}/gu, '');
    if (t.normalizer !== null) s = t.normalizer(s);
    if (s.length === 0) return [];
    const subs = splitNormalized(t, s, section.guarded);
    stripAround(t, subs);
    return subs.flatMap((sub) => {
      if (sub.text.length === 0) return [];
      if (sub.token) return [sub.text];
      const pre = t.pre_tokenizer !== null ? t.pre_tokenizer(sub.text, { section_index }) : [sub.text];
      return t.model(pre);
    });
  });
  const processed = t.post_processor ? t.post_processor(tokens, null, addSpecialTokens).tokens : tokens;
  return processed.map((p) => t.added_tokens_map.get(p)?.id ?? t.model.tokens_to_ids.get(p) ?? (t.model.unk_token_id as number));
}
