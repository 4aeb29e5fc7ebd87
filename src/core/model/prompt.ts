/**
 * Chat formatting and the token positions WAS cares about. The controller reads the residual at the LAST prompt
 * token, i.e. the end of the chat-templated prompt including the generation prompt (docs/METHOD-NOTES.md section 1), and the
 * "post-instruction" positions are the template tokens that follow the user's text (end-of-turn marker and the
 * assistant header), where refusal-relevant features are read in neighbouring methods.
 */

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
}

export interface ChatOptions {
  system?: string;
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
  const text = tok.apply_chat_template(messages, { add_generation_prompt: true, tokenize: false }) as string;
  if (typeof text !== 'string') throw new Error('apply_chat_template did not return text');
  const ids = tok.encode(text, { add_special_tokens: false });
  if (ids.length === 0) throw new Error('the chat template rendered to no tokens');
  const at = text.lastIndexOf(user);
  let start: number;
  if (at < 0) {
    // The template rewrote the message (e.g. trimmed it): the generation prompt alone is the safe lower bound.
    const noGen = tok.apply_chat_template(messages, { add_generation_prompt: false, tokenize: false }) as string;
    start = commonPrefix(tok.encode(noGen, { add_special_tokens: false }), ids);
  } else {
    start = commonPrefix(tok.encode(text.slice(0, at + user.length), { add_special_tokens: false }), ids);
  }
  start = Math.min(start, ids.length - 1);
  const postInstruction = Array.from({ length: ids.length - start }, (_, i) => start + i);
  return { text, ids, lastIndex: ids.length - 1, postInstruction };
}
