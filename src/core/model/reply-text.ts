/**
 * A reply's text from its token ids, and the text each new token adds while a reply streams. Shared by every
 * generation path (the decode engine's flows and transformers.js's generate loop), so they stream alike.
 */
import type { TjsTokenizer } from './prompt.js';

/**
 * The reply's text: special tokens (end of turn, padding) left out. A reply of no tokens (stopped before its first)
 * is '' here: transformers.js's decode throws on an empty list.
 */
export function replyText(tokenizer: Pick<TjsTokenizer, 'decode'>, ids: readonly number[]): string {
  if (ids.length === 0) return '';
  return tokenizer.decode([...ids], { skip_special_tokens: true });
}

/**
 * The text each token adds to a growing reply. While the text ends inside a multi-byte character (a U+FFFD at the
 * end: the token holds only part of its bytes) nothing is emitted; the whole character comes with a later token.
 */
export class TextDeltas {
  private readonly ids: number[] = [];
  private emitted = '';
  constructor(private readonly decode: (ids: number[]) => string) {}

  push(id: number): string {
    this.ids.push(id);
    const text = this.decode(this.ids);
    if (text.endsWith('\uFFFD') || !text.startsWith(this.emitted)) return '';
    const delta = text.slice(this.emitted.length);
    this.emitted = text;
    return delta;
  }
}
