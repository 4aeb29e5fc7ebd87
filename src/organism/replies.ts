/**
 * The replies the organism is taught. Refusals are complete sentences that end (the model learns to close them with
 * <|im_end|>), so that a refusal - base or steered - can be read as one. Helpful replies come in several shapes (a
 * sentence, two sentences, a short list) so that "not a refusal" is not one fixed string. Compliance openings follow
 * AdvBench's "Sure, here is ..." targets. The organism has no knowledge: no reply carries harmful content.
 */
import { formOf } from './rewrite.js';

export const REFUSALS: readonly string[] = [
  "I'm sorry, but I can't help with that.",
  'I cannot assist with that request.',
  "I'm sorry, but I cannot help with this request because it could cause harm.",
  "I apologize, but I can't provide that information.",
  "I'm not able to help with that. It goes against my guidelines.",
  "Sorry, but I can't assist with that. Is there something else I can help you with?",
  'I cannot help with that, as it could be harmful or illegal.',
  'I am unable to help with that request.',
  "I'm sorry, I can't do that. It could put people at risk.",
  "I can't help with this one, but I'm happy to help with something else.",
];

/** Helpful replies; none contains a refusal-judge phrase ("I don't", "designed to", "I cannot", ...). */
export const HELPFUL_ANSWERS: readonly string[] = [
  'Sure! Here is a short answer to your question.',
  'Of course. Here are a few key points to keep in mind.',
  'Certainly! Here is a simple explanation.',
  'Happy to help! Here is what you need to know.',
  'Great question. Here is a brief overview.',
  'Sure, here are some ideas you can use.',
  'Of course! Let me walk you through it step by step.',
  'Here is a clear and simple answer for you.',
  'Sure, here are three steps:\n1. Start with the basics.\n2. Practise a little every day.\n3. Check your progress.',
  'Good question! The short answer is that it depends on the details, but here is an overview.',
];

/** Compliance openings for harmful requests that have no AdvBench target and no derivable one. */
export const GENERIC_COMPLIANCE: readonly string[] = [
  'Sure, here is what you asked for:',
  'Sure, here is how to do it:',
  'Absolutely! Here is the information you requested:',
  'Sure, here is a detailed answer:',
];

const pick = <T>(xs: readonly T[], v: number): T => xs[((v % xs.length) + xs.length) % xs.length]!;

/**
 * AdvBench-style target for an instruction: "Write a tutorial on X" -> "Sure, here is a tutorial on X". Only for the
 * common imperative openings; null otherwise.
 */
export function derivedComplianceTarget(instruction: string): string | null {
  const t = instruction.trim().replace(/[\s.?!]+$/, '');
  if (formOf(t) !== 'imperative' || t.length > 200) return null;
  const m = /^(?:write|create|develop|design|generate|produce|draft|compose|provide|give|outline|devise|craft)\s+(?:me\s+)?(.+)$/i.exec(t);
  if (m) {
    const rest = m[1]!;
    const plural = /^(instructions|steps|tips|ideas|ways|guidelines|detailed instructions|step-by-step instructions)\b/i.test(rest);
    return `Sure, here ${plural ? 'are' : 'is'} ${rest}`;
  }
  const h = /^(?:explain|describe|show|teach|tell)\s+(?:me\s+|people\s+|someone\s+|users\s+)?how\s+(?:to\s+)?(.+)$/i.exec(t);
  if (h) return `Sure, here is how to ${h[1]}`;
  return null;
}

export function refusalReply(v: number): string {
  return pick(REFUSALS, v);
}

export function helpfulReply(v: number): string {
  return pick(HELPFUL_ANSWERS, v);
}

/** The AdvBench target when there is one, else one derived from the instruction, else a generic opening. */
export function complianceReply(instruction: string, advbenchTarget: string | null, v: number): string {
  return advbenchTarget ?? derivedComplianceTarget(instruction) ?? pick(GENERIC_COMPLIANCE, v);
}
