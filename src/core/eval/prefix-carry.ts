/**
 * Prompt prefix caches carried from the eval's calibration to its main loop. With the default calibration set (every
 * prompt of the run) the calibration decodes each prompt's base reply first, and the steered conditions of the same
 * prompt are decoded later in the main loop: without a carry, each of them runs the same unsteered prefill again.
 * The decode engine hands the prefill's cache back (DecodeResult.prefix, bit for bit a batch-1 prefill), so the main
 * loop can start from it (DecodeRow.prefix) and the records do not change.
 *
 * The caches are kept in memory up to a byte budget, taken in the order the calibration meets the prompts (shortest
 * first, so the budget covers as many prompts as it can); each is dropped once its prompt's last record is made. A prompt whose cache did
 * not fit is prefilled again, as before. Per token a cache holds layers x 2 x KV heads x head size values (46 KB in
 * fp32 on the SmolLM2-135M shape), so the default budget covers a few hundred prompts of ordinary length.
 */
import type { PromptPrefix } from '../model/decode.js';

/** Default budget of carried prefixes (bytes): the eval's RunEvalOptions.prefixCarryBytes. */
export const DEFAULT_PREFIX_CARRY_BYTES = 256 * 2 ** 20;

export function prefixBytes(p: PromptPrefix): number {
  return Object.values(p.kv).reduce((n, t) => n + t.data.byteLength, 0);
}

export class PrefixCarry {
  private readonly kept = new Map<string, PromptPrefix>();
  private used = 0;

  constructor(readonly budget: number) {
    if (!Number.isFinite(budget) || budget < 0) throw new Error(`prefix carry budget must be a number of bytes >= 0, got ${String(budget)}`);
  }

  /** Keeps the prefix under `key` when it fits the budget; false when it does not (that prompt prefills again). */
  offer(key: string, prefix: PromptPrefix): boolean {
    if (this.kept.has(key)) return true;
    const n = prefixBytes(prefix);
    if (this.used + n > this.budget) return false;
    this.kept.set(key, prefix);
    this.used += n;
    return true;
  }

  get(key: string): PromptPrefix | undefined {
    return this.kept.get(key);
  }

  drop(key: string): void {
    const p = this.kept.get(key);
    if (!p) return;
    this.kept.delete(key);
    this.used -= prefixBytes(p);
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.used;
  }

  get size(): number {
    return this.kept.size;
  }
}
