/**
 * Prompt fitting: shortens a user message so that its chat-formatted prompt plus the reply's maxNewTokens fits the
 * model's context (max_position_embeddings). Evaluation sets (ToxicChat, in-the-wild jailbreaks) hold prompts far
 * longer than a small model's context; without fitting they cannot be generated at all and end up unjudged.
 *
 * Only the user message's tokens are cut: the chat template around it (system turn, end-of-turn marker, generation
 * prompt) is never touched, so the last prompt token, the one the controller reads, stays the template's own.
 * The kept pieces are decoded back to text and the chat template is applied to that text as usual afterwards; the
 * result is re-measured, and shortened further until it really fits (decode/encode is not an exact inverse at the
 * cut edges).
 *
 * The reply's room: maxNewTokens, but never more than half the context. Asking for more new tokens than the context
 * holds is allowed elsewhere (generation stops at the context's end), so fitting must not turn such a request into
 * an error for every prompt, nor cut a prompt down to nothing; the prompt therefore always keeps at least half.
 *
 * Modes: 'middle' (default) keeps the head and the tail of the message with a visible marker between them (the
 * request's framing and its final question usually sit at the two ends); 'head' keeps the beginning, 'tail' the end;
 * 'none' leaves the message as it is, so the model's own "longer than the model's context" error stands.
 *
 * Browser-safe: no Node imports (the UI's worker fits with this same function).
 */
import { encodeText, formatChat, type ChatOptions, type TjsTokenizer } from '../model/prompt.js';

export const FIT_MODES = ['none', 'middle', 'head', 'tail'] as const;
export type FitMode = (typeof FIT_MODES)[number];
export const DEFAULT_FIT_MODE: FitMode = 'middle';

/** What stands where the cut-out tokens were: visible to the model and to a reader of the records. */
export const FIT_MARKER = ' [...] ';

/** The tokenizer operations fitting needs. */
export interface FitDeps {
  /** Token ids of a text on its own (no special tokens added). */
  encode(text: string): number[];
  /** Text of token ids (special tokens kept, so a message quoting one keeps it). */
  decode(ids: number[]): string;
  /** Length in tokens of the chat-formatted prompt (template + generation prompt) for a user message. */
  promptTokens(user: string): number;
}

export interface FitOptions {
  /** The model's context (max_position_embeddings); null = unknown, nothing is cut. */
  contextLength: number | null;
  /**
   * Tokens the reply may take: the fitted prompt leaves room for all of them, up to half the context
   * (replyRoom(); generation stops at the context's end beyond that).
   */
  maxNewTokens: number;
  /** Default 'middle'. */
  mode?: FitMode;
}

export interface FitResult {
  /** The user message to chat-format: the original, or the shortened one with the marker. */
  text: string;
  truncated: boolean;
  /** Tokens of the chat-formatted prompt for the original message. */
  originalTokens: number;
  /** Tokens of the chat-formatted prompt for `text` (= originalTokens when nothing was cut). */
  keptTokens: number;
}

/** The context tokens kept free for the reply: maxNewTokens, at most half the context. */
export function replyRoom(contextLength: number, maxNewTokens: number): number {
  return Math.min(maxNewTokens, Math.floor(contextLength / 2));
}

/** Validates a mode given as text (CLI flag, stored UI setting); undefined = the default. */
export function parseFitMode(value: unknown, what = 'fit'): FitMode {
  if (value === undefined) return DEFAULT_FIT_MODE;
  if (typeof value === 'string' && (FIT_MODES as readonly string[]).includes(value)) return value as FitMode;
  throw new Error(`${what} must be one of ${FIT_MODES.join(' | ')}, got ${JSON.stringify(value)}`);
}

/** FitDeps over a transformers.js tokenizer and its chat template (the same formatting generation uses). */
export function fitDepsFromTokenizer(tok: TjsTokenizer, chat: ChatOptions = {}): FitDeps {
  return {
    encode: (text) => encodeText(tok, text, { allowSpecialTokens: chat.allowSpecialTokens === true }),
    decode: (ids) => tok.decode(ids, { skip_special_tokens: false }),
    promptTokens: (user) => formatChat(tok, user, chat).ids.length,
  };
}

/** A byte-level tokenizer decodes a multi-byte character cut in two as U+FFFD: drop those halves at the cut. */
const trimEnd = (s: string) => s.replace(/\uFFFD+$/u, '');
const trimStart = (s: string) => s.replace(/^\uFFFD+/u, '');

/** The shortened message keeping `keep` of the user tokens. */
function shorten(d: FitDeps, ids: number[], keep: number, mode: Exclude<FitMode, 'none'>): string {
  if (mode === 'head') return `${trimEnd(d.decode(ids.slice(0, keep)))}${FIT_MARKER.trimEnd()}`;
  if (mode === 'tail') return `${FIT_MARKER.trimStart()}${trimStart(d.decode(ids.slice(ids.length - keep)))}`;
  const head = Math.ceil(keep / 2);
  const tail = keep - head;
  const tailText = tail > 0 ? trimStart(d.decode(ids.slice(ids.length - tail))) : '';
  return `${trimEnd(d.decode(ids.slice(0, head)))}${FIT_MARKER}${tailText}`;
}

/**
 * Fits a user message into the context. Throws when the context cannot hold the template, the marker, the reply and
 * at least one token of the message (middle: two, one at each end).
 */
export function fitPrompt(d: FitDeps, userText: string, o: FitOptions): FitResult {
  if (typeof userText !== 'string' || userText.length === 0) throw new Error('fit: the user message must be a non-empty string');
  const mode = parseFitMode(o.mode);
  if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 1) throw new Error(`fit: maxNewTokens must be an integer >= 1, got ${o.maxNewTokens}`);
  const ctx = o.contextLength;
  if (ctx !== null && (!Number.isInteger(ctx) || ctx < 2)) throw new Error(`fit: contextLength must be an integer >= 2 or null (unknown), got ${ctx}`);
  const originalTokens = d.promptTokens(userText);
  const untouched: FitResult = { text: userText, truncated: false, originalTokens, keptTokens: originalTokens };
  if (mode === 'none' || ctx === null) return untouched;
  // The prompt may take everything the reply does not (generate() refuses a prompt that fills the context).
  const reply = replyRoom(ctx, o.maxNewTokens);
  const budget = ctx - reply;
  if (originalTokens <= budget) return untouched;

  const ids = d.encode(userText);
  const overhead = originalTokens - ids.length; // template tokens around the message
  const markerTokens = d.encode(mode === 'middle' ? FIT_MARKER : FIT_MARKER.trim()).length;
  const least = mode === 'middle' ? 2 : 1;
  const tooSmall = () =>
    new Error(
      `fit: the model's context (${ctx} tokens) cannot hold this prompt shortened: the chat template takes ${overhead} tokens, ` +
        `the marker "${FIT_MARKER.trim()}" ${markerTokens} and the reply ${reply} (max new tokens), leaving ` +
        `${budget - overhead - markerTokens} for the message (at least ${least} needed); ask for fewer new tokens`,
    );
  let keep = Math.min(ids.length - 1, budget - overhead - markerTokens);
  if (keep < least) throw tooSmall();
  // Re-measure on the real formatted prompt; step down by the excess until it fits. Each step keeps fewer tokens,
  // so this ends; in practice one or two rounds.
  for (;;) {
    const text = shorten(d, ids, keep, mode);
    const kept = d.promptTokens(text);
    if (kept <= budget) return { text, truncated: true, originalTokens, keptTokens: kept };
    keep -= Math.max(1, kept - budget);
    if (keep < least) throw tooSmall();
  }
}

/** The note shown to a user and logged: plain text. */
export function fitNote(r: FitResult): string | null {
  return r.truncated ? `prompt shortened from ${r.originalTokens} to ${r.keptTokens} tokens to fit the context` : null;
}
