/**
 * The append-only eval record store. One finished record (dataset, id, condition, ... any JSON) per line of a
 * JSONL file, keyed by (dataset, id, condition), so a killed run resumes where it stopped: it skips what `has()`
 * and redoes at most the record that was in flight.
 *
 * The RecordStore interface is platform-free; implementations: MemoryRecordStore (here: tests, and the base of the
 * others), the JSONL file (records-node.ts openRunStore) and IndexedDB (records-idb.ts). summarize() groups records
 * by (dataset, condition) with Wilson intervals; summary.ts turns that into the files a run folder holds.
 */
import { Z95, wilsonInterval } from './stats.js';

export interface RecordKey {
  dataset: string;
  id: string;
  condition: string;
}

/** A finished result; everything besides the key is free-form JSON (output, refused, judge, s, w, timings...). */
export type EvalRecord = RecordKey & { [field: string]: unknown };

export interface RecordStore {
  /** Number of stored records. */
  readonly size: number;
  /** True once the record is stored, or while its append is in flight (so it is never started twice). */
  has(key: RecordKey): boolean;
  get(key: RecordKey): EvalRecord | undefined;
  /** Stored records in append order. */
  records(): readonly EvalRecord[];
  /** Stores a record durably; rejects a key that is already stored. */
  append(record: EvalRecord): Promise<void>;
  close(): Promise<void>;
}

/** Unambiguous map key for (dataset, id, condition): JSON keeps separators inside values from colliding. */
export function recordKey(key: RecordKey): string {
  return JSON.stringify([key.dataset, key.id, key.condition]);
}

function describeKey(key: RecordKey): string {
  return `(dataset '${key.dataset}', id '${key.id}', condition '${key.condition}')`;
}

/** Throws unless `value` is a JSON object with non-empty string dataset, id and condition. */
export function checkRecord(value: unknown): asserts value is EvalRecord {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError(`eval record must be an object with dataset, id and condition, got ${Array.isArray(value) ? 'an array' : String(value)}`);
  }
  const r = value as Record<string, unknown>;
  for (const field of ['dataset', 'id', 'condition'] as const) {
    if (typeof r[field] !== 'string' || (r[field] as string) === '') {
      throw new TypeError(`eval record field '${field}' must be a non-empty string, got ${JSON.stringify(r[field])}`);
    }
  }
}

/** The record as a reader of the file will see it (undefined fields gone, NaN -> null), plus its line. */
function serialise(record: EvalRecord): { line: string; stored: EvalRecord } {
  checkRecord(record);
  let json: string;
  try {
    json = JSON.stringify(record);
  } catch (err) {
    throw new TypeError(`eval record ${describeKey(record)} is not JSON-serialisable: ${(err as Error).message}`);
  }
  return { line: `${json}\n`, stored: JSON.parse(json) as EvalRecord };
}

/** Items whose (dataset, item.id, condition) is not stored yet: what a resumed run still has to do. */
export function remaining<T extends { id: string }>(store: Pick<RecordStore, 'has'>, dataset: string, condition: string, items: readonly T[]): T[] {
  return items.filter((item) => !store.has({ dataset, id: item.id, condition }));
}

/** In-memory store: for tests, and the in-memory half an IndexedDB store can reuse. */
export class MemoryRecordStore implements RecordStore {
  protected readonly index = new Map<string, EvalRecord>();
  protected readonly list: EvalRecord[] = [];
  protected readonly pending = new Set<string>();
  protected closed = false;

  constructor(initial: Iterable<EvalRecord> = []) {
    for (const r of initial) this.remember(serialise(r).stored);
  }

  get size(): number {
    return this.list.length;
  }

  has(key: RecordKey): boolean {
    const k = recordKey(key);
    return this.index.has(k) || this.pending.has(k);
  }

  get(key: RecordKey): EvalRecord | undefined {
    return this.index.get(recordKey(key));
  }

  records(): readonly EvalRecord[] {
    return this.list;
  }

  async append(record: EvalRecord): Promise<void> {
    const { line, stored } = this.begin(record);
    const k = recordKey(stored);
    try {
      await this.persist(line, stored);
    } catch (err) {
      this.pending.delete(k);
      throw err;
    }
    this.pending.delete(k);
    this.remember(stored);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Checks the record and reserves its key synchronously, so two concurrent appends of one key cannot both pass. */
  protected begin(record: EvalRecord): { line: string; stored: EvalRecord } {
    if (this.closed) throw new Error('record store is closed');
    const s = serialise(record);
    if (this.has(s.stored)) throw new Error(`eval record ${describeKey(s.stored)} is already stored: a run must not repeat a finished record`);
    this.pending.add(recordKey(s.stored));
    return s;
  }

  /** Where a subclass makes the record durable; the memory store has nothing to do. */
  protected async persist(_line: string, _record: EvalRecord): Promise<void> {}

  protected remember(record: EvalRecord): void {
    const k = recordKey(record);
    if (this.index.has(k)) throw new Error(`eval record ${describeKey(record)} is already stored`);
    this.index.set(k, record);
    this.list.push(record);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Summaries.

export interface SummaryRow {
  dataset: string;
  condition: string;
  /** The judge id the group's records carry (null if they carry none). */
  judge: string | null;
  /** Judged records (records with a boolean `refused`). */
  n: number;
  refusals: number;
  /** refusals / n; NaN when n = 0. */
  refusal_rate: number;
  ci_low: number;
  ci_high: number;
  /** Records of the group without a boolean `refused` (e.g. failed generations), left out of n. */
  unjudged: number;
}

export interface SummaryOptions {
  /** Normal quantile of the Wilson interval (default 1.959964, 95 %). */
  z?: number;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Refusal rate per (dataset, condition), read from each record's `refused` (boolean) and `judge` (string).
 * Records judged by different judges in one group are an error: their rates are not comparable.
 */
export function summarize(records: Iterable<EvalRecord>, options: SummaryOptions = {}): SummaryRow[] {
  const z = options.z ?? Z95;
  const groups = new Map<string, { dataset: string; condition: string; judges: Set<string | null>; n: number; refusals: number; unjudged: number }>();
  for (const r of records) {
    checkRecord(r);
    const k = JSON.stringify([r.dataset, r.condition]);
    let g = groups.get(k);
    if (!g) {
      g = { dataset: r.dataset, condition: r.condition, judges: new Set(), n: 0, refusals: 0, unjudged: 0 };
      groups.set(k, g);
    }
    if (typeof r.refused !== 'boolean') {
      g.unjudged++;
      continue;
    }
    g.judges.add(typeof r.judge === 'string' ? r.judge : null);
    g.n++;
    if (r.refused) g.refusals++;
  }
  const rows: SummaryRow[] = [];
  for (const g of groups.values()) {
    if (g.judges.size > 1) {
      const list = [...g.judges].map((j) => (j === null ? '(none)' : j)).join(', ');
      throw new Error(`dataset '${g.dataset}', condition '${g.condition}' mixes judges (${list}): summarise each judge separately`);
    }
    const ci = wilsonInterval(g.refusals, g.n, z);
    rows.push({
      dataset: g.dataset,
      condition: g.condition,
      judge: g.judges.size === 1 ? [...g.judges][0]! : null,
      n: g.n,
      refusals: g.refusals,
      refusal_rate: ci.rate,
      ci_low: ci.low,
      ci_high: ci.high,
      unjudged: g.unjudged,
    });
  }
  return rows.sort((a, b) => compare(a.dataset, b.dataset) || compare(a.condition, b.condition));
}
