/**
 * Chat formatting and the token positions WAS cares about. The user's text is text: special-token strings in it
 * (`<|im_end|>`...) stay characters unless `allowSpecialTokens` is set (special-tokens.ts). The controller reads the residual at the LAST prompt
 * token, i.e. the end of the chat-templated prompt including the generation prompt (docs/METHOD-NOTES.md section 1), and the
 * "post-instruction" positions are the template tokens that follow the user's text (end-of-turn marker and the
 * assistant header), where refusal-relevant features are read in neighbouring methods.
 */

import { encodeProtected, findSpecialTokenStrings, SpecialTokenError, specialTokenIds } from './special-tokens.js';

/** The parts of a transformers.js tokenizer used here. */
export interface TjsTokenizer {
  apply_chat_template(messages: { role: string; content: string }[], opts: Record<string, unknown>): unknown;
  encode(text: string, opts?: { add_special_tokens?: boolean }): number[];
  decode(ids: number[], opts?: { skip_special_tokens?: boolean }): string;
  chat_template?: unknown;
}

export interface ChatPrompt {
  /** The rendered template (with the generation prompt). */
  text: string;
  ids: number[];
  /** ids.length - 1: the position the controller reads. */
  lastIndex: number;
  /** Positions of the template tokens after the user's text, ascending; ends with lastIndex. */
  postInstruction: number[];
  /** Special-token strings found in the user's text: text in `ids`, unless allowSpecialTokens made them tokens. */
  specialTokens: string[];
  /** Where the user's text lies in `text` ([start, end) in characters); null when the template rewrote it. */
  userSpan: [number, number] | null;
}

export interface ChatOptions {
  system?: string;
  /**
   * Let special-token strings in the user's text become the special tokens (role and control tokens), as a plain
   * transformers.js tokenisation does. Off by default; for studying that attack.
   */
  allowSpecialTokens?: boolean;
}

function countIn(ids: readonly number[], set: ReadonlySet<number>): number {
  let n = 0;
  for (const id of ids) if (set.has(id)) n++;
  return n;
}

/**
 * Ids of `text` whose span [start, end) holds user text. Ordinary text takes the tokenizer's own path; when the user
 * text would add special tokens (a special-token string in it, or any extra special token in the result) and that is
 * not allowed, the span is tokenised as text, and the result must hold exactly the special tokens of `reference`
 * (the same text around a neutral message), or this throws.
 */
function encodeUser(tok: TjsTokenizer, text: string, start: number, end: number, reference: string, addSpecial: boolean, allow: boolean): { ids: number[]; guarded: boolean } {
  const ids = tok.encode(text, { add_special_tokens: addSpecial });
  if (allow) return { ids, guarded: false };
  const specials = specialTokenIds(tok);
  const expected = countIn(tok.encode(reference, { add_special_tokens: addSpecial }), specials);
  const user = text.slice(start, end);
  if (findSpecialTokenStrings(tok, user).length === 0 && countIn(ids, specials) === expected) return { ids, guarded: false };
  const safe = encodeProtected(tok, text, start, end, addSpecial);
  if (countIn(safe, specials) !== expected) {
    throw new SpecialTokenError('the prompt would still create special tokens after being tokenised as text; remove the special-token strings from it, or allow special tokens (--allow-special-tokens)');
  }
  return { ids: safe, guarded: true };
}

/** Ids of a text on its own (no chat template), special-token strings kept as text unless allowed. */
export function encodeText(tok: TjsTokenizer, text: string, opts: { addSpecialTokens?: boolean; allowSpecialTokens?: boolean } = {}): number[] {
  const add = opts.addSpecialTokens ?? false;
  return encodeUser(tok, text, 0, text.length, 'x', add, opts.allowSpecialTokens === true).ids;
}

/** A message no template rewrites and no prompt contains (private-use characters around a word). */
const MARKER = '\uE000steerlab\uE001';

/**
 * Where the user's message lies in the rendered template: found by rendering the same messages with a marker in
 * its place, so a message that also occurs in the template's own text (`<|im_end`) is not mistaken for it.
 */
function findUserSpan(text: string, marked: string, user: string): [number, number] | null {
  const m = marked.indexOf(MARKER);
  if (m < 0 || !text.startsWith(marked.slice(0, m)) || text.slice(m, m + user.length) !== user) return null;
  if (text.slice(m + user.length) !== marked.slice(m + MARKER.length)) return null;
  return [m, m + user.length];
}

function commonPrefix(a: number[], b: number[]): number {
  let k = 0;
  while (k < a.length && k < b.length && a[k] === b[k]) k++;
  return k;
}

export function formatChat(tok: TjsTokenizer, user: string, opts: ChatOptions = {}): ChatPrompt {
  if (typeof user !== 'string' || user.length === 0) throw new Error('chat prompt: the user message must be a non-empty string');
  if (!tok.chat_template) throw new Error('this tokenizer has no chat template; pass token ids (inputIds) instead of a prompt');
  const messages = [...(opts.system ? [{ role: 'system', content: opts.system }] : []), { role: 'user', content: user }];
  const render = (m: typeof messages, gen: boolean) => tok.apply_chat_template(m, { add_generation_prompt: gen, tokenize: false }) as string;
  const text = render(messages, true);
  if (typeof text !== 'string') throw new Error('apply_chat_template did not return text');
  const allow = opts.allowSpecialTokens === true;
  const specialTokens = findSpecialTokenStrings(tok, user);
  const withMessage = (content: string) => [...messages.slice(0, -1), { role: 'user', content }];
  const span = findUserSpan(text, render(withMessage(MARKER), true), user);
  const at = span ? span[0] : -1;
  if (at < 0 && specialTokens.length > 0 && !allow) {
    throw new SpecialTokenError(`the chat template changed the message, so its special-token strings (${specialTokens.join(' ')}) cannot be kept as text; remove them, or allow special tokens (--allow-special-tokens)`);
  }
  const reference = render(withMessage('x'), true);
  const { ids, guarded } = at < 0 ? { ids: tok.encode(text, { add_special_tokens: false }), guarded: false } : encodeUser(tok, text, at, at + user.length, reference, false, allow);
  if (ids.length === 0) throw new Error('the chat template rendered to no tokens');
  let start: number;
  if (at < 0) {
    // The template rewrote the message (e.g. trimmed it): the generation prompt alone is the safe lower bound.
    const noGen = render(messages, false);
    start = commonPrefix(tok.encode(noGen, { add_special_tokens: false }), ids);
  } else {
    const head = text.slice(0, at + user.length);
    start = commonPrefix(guarded ? encodeProtected(tok, head, at, at + user.length) : tok.encode(head, { add_special_tokens: false }), ids);
  }
  start = Math.min(start, ids.length - 1);
  const postInstruction = Array.from({ length: ids.length - start }, (_, i) => start + i);
  return { text, ids, lastIndex: ids.length - 1, postInstruction, specialTokens, userSpan: span };
}
