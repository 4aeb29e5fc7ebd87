/**
 * Conversations -> padded token batches with the loss on assistant answer tokens only (the answer and its closing
 * <|im_end|>). Sequences are grouped by length so that padding, and the attention cost that grows with the square
 * of the longest sequence in a batch, stay small.
 */
import { IM_END_ID, ENDOFTEXT_ID } from '../core/onnx/testmodel/tokenizer.js';
import { renderChat, type BpeTokenizer } from './bpe.js';
import { shuffled, type Conversation } from './data.js';
import { wrapInFraming } from './framings.js';

export interface TokenizedConversation {
  ids: number[];
  /** index of the first answer token: loss on positions answerStart-1 .. ids.length-2 (predicting answer + <|im_end|>) */
  answerStart: number;
  behaviour: Conversation['behaviour'];
}

export function tokenizeConversation(tok: BpeTokenizer, c: Conversation): TokenizedConversation {
  const prompt = tok.encode(renderChat(c.messages, true));
  const answer = tok.encode(c.answer);
  return { ids: [...prompt, ...answer, IM_END_ID], answerStart: prompt.length, behaviour: c.behaviour };
}

/**
 * Tokenizes one epoch, dropping conversations longer than `contextLength`. Wrapped (jailbreak) requests are first
 * re-wrapped with a shorter framing until they fit, since their framing is the part that may be shortened (written
 * framings are short and used whole).
 */
export function tokenizeEpoch(
  tok: BpeTokenizer,
  convs: Conversation[],
  contextLength: number,
): { kept: TokenizedConversation[]; dropped: number } {
  const kept: TokenizedConversation[] = [];
  let dropped = 0;
  for (const c of convs) {
    let t = tokenizeConversation(tok, c);
    const w = c.wrap;
    if (w) {
      let maxChars = w.maxChars;
      while (t.ids.length > contextLength && maxChars > 40) {
        maxChars = Math.floor(maxChars * 0.8);
        const user = wrapInFraming(w.framing, w.request, maxChars, w.variant);
        const messages = c.messages.map((m) => (m.role === 'user' ? { ...m, content: user } : m));
        t = tokenizeConversation(tok, { ...c, messages });
      }
    }
    if (t.ids.length > contextLength) dropped++;
    else kept.push(t);
  }
  return { kept, dropped };
}

export interface Batch {
  ids: Int32Array; // [B, S]
  targets: Int32Array; // [B*S]
  weights: Float32Array; // [B*S]
  batch: number;
  seqLen: number;
  answerTokens: number;
  /** per row: index of the first answer token (the loss starts one position earlier) */
  answerStarts: Int32Array;
}

export function makeBatch(items: TokenizedConversation[]): Batch {
  const B = items.length;
  const S = Math.max(...items.map((t) => t.ids.length));
  const ids = new Int32Array(B * S).fill(ENDOFTEXT_ID);
  const targets = new Int32Array(B * S).fill(ENDOFTEXT_ID);
  const weights = new Float32Array(B * S);
  let answerTokens = 0;
  items.forEach((t, b) => {
    ids.set(t.ids, b * S);
    for (let i = 0; i + 1 < t.ids.length; i++) targets[b * S + i] = t.ids[i + 1];
    for (let i = t.answerStart - 1; i + 1 < t.ids.length; i++) {
      weights[b * S + i] = 1;
      answerTokens++;
    }
  });
  return { ids, targets, weights, batch: B, seqLen: S, answerTokens, answerStarts: Int32Array.from(items, (t) => t.answerStart) };
}

/** Length-grouped batches in a seeded random order: sort within windows of 32 batches, cut, shuffle the batches. */
export function epochBatches(items: TokenizedConversation[], batchSize: number, seed: number): Batch[] {
  const order = shuffled(items, seed);
  const window = batchSize * 32;
  const groups: TokenizedConversation[][] = [];
  for (let w = 0; w < order.length; w += window) {
    const chunk = order.slice(w, w + window).sort((a, b) => a.ids.length - b.ids.length);
    for (let i = 0; i < chunk.length; i += batchSize) groups.push(chunk.slice(i, i + batchSize));
  }
  return shuffled(groups, seed + 1).map(makeBatch);
}
