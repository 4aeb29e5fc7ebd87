/**
 * The append-only eval record store. One finished record (dataset, id, condition, ... any JSON) per line of a
 * JSONL file, keyed by (dataset, id, condition), so a killed run resumes where it stopped: it skips what `has()`
 * and redoes at most the record that was in flight.
 *
 * The RecordStore interface is platform-free (the browser can implement it on IndexedDB); openRunStore() is the
 * Node implementation and loads node:fs lazily so this module stays importable in the browser. Summaries group by
 * (dataset, condition) with Wilson intervals and are written as JSON, CSV and a Markdown table.
 */
import Papa from 'papaparse';
import type { FileHandle } from 'node:fs/promises';
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
// Node: a JSONL file in a run directory.

export interface TornTail {
  /** 1-based line of the file where the torn record started. */
  line: number;
  bytes: number;
  /** File the torn bytes were appended to (the main file is then truncated to its last full line). */
  movedTo: string;
}

/** A lock left by a writer that no longer runs (killed), taken over on open. */
export interface StaleLock {
  pid: number;
  host: string;
  since: string;
  command: string;
}

export interface OpenReport {
  file: string;
  /** Records read back from the file. */
  records: number;
  /** The partial last line of a killed writer, set aside; null when the file ended cleanly. */
  torn: TornTail | null;
  /** Lines repeating an earlier key (only possible if something else wrote the file): the first one is kept. */
  duplicates: { line: number; key: RecordKey }[];
  /** Where the dropped duplicate lines were appended (they are removed from the records file); null when none. */
  duplicatesMovedTo: string | null;
  /** Locks of killed writers, removed on open. */
  staleLocks: StaleLock[];
}

/** What a user must hear about an open: every recovery, said with its file, never done silently. */
export function describeOpenReport(r: OpenReport): string[] {
  const out: string[] = [];
  for (const l of r.staleLocks) {
    out.push(`took over the run folder from process ${l.pid} on ${l.host} (${l.command}, since ${l.since}), which no longer runs`);
  }
  if (r.torn) {
    out.push(`${r.file}: the last line (line ${r.torn.line}, ${r.torn.bytes} bytes) was cut off by a killed run; it was moved to ${r.torn.movedTo} and that record will be redone`);
  }
  if (r.duplicates.length > 0) {
    const first = r.duplicates.slice(0, 5).map((d) => d.line).join(', ');
    out.push(
      `${r.file}: dropped ${r.duplicates.length} duplicate record line${r.duplicates.length === 1 ? '' : 's'} (line${r.duplicates.length === 1 ? '' : 's'} ${first}` +
        `${r.duplicates.length > 5 ? ', ...' : ''}) that repeat an earlier (dataset, id, condition); the first of each is kept, the dropped lines are in ${r.duplicatesMovedTo}`,
    );
  }
  return out;
}

export interface OpenRunStoreOptions {
  /** Records file name inside the run directory (default 'records.jsonl'). */
  fileName?: string;
}

type Fs = typeof import('node:fs/promises');
type PathMod = typeof import('node:path');

async function nodeModules(): Promise<{ fs: Fs; path: PathMod }> {
  const [fs, path] = await Promise.all([import('node:fs/promises'), import('node:path')]);
  return { fs, path: path.default ?? path };
}

async function fsyncDir(fs: Fs, dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Writes a file so that readers see either the old or the new contents, never half of one. The project's one
 * atomic writer is Node-only, so it is imported lazily: this module stays loadable in a browser.
 */
export async function writeFileAtomic(file: string, text: string | Uint8Array): Promise<void> {
  const { writeFileAtomic: write } = await import('../util/atomic-write.js');
  await write(file, text);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

interface ReadBack {
  /** Records with their line and byte range (newline excluded). */
  records: { line: number; start: number; end: number; record: EvalRecord }[];
  /** Byte length of the good prefix; anything after it is a torn tail. */
  goodBytes: number;
  tornLine: number | null;
}

/**
 * Splits the file into finished records and a torn tail. Only the last line can be torn (every append is one
 * write of a whole line); a bad line anywhere else is corruption and stops the open with its line number.
 */
export function readRecordLines(buf: Uint8Array, file: string): ReadBack {
  const records: ReadBack['records'] = [];
  let start = 0;
  let line = 0;
  while (start < buf.length) {
    line++;
    const nl = buf.indexOf(0x0a, start);
    const end = nl === -1 ? buf.length : nl;
    const isLast = nl === -1 || nl === buf.length - 1;
    if (nl === -1) return { records, goodBytes: start, tornLine: line }; // no newline: the write never finished
    let problem: string | null = null;
    let record: EvalRecord | null = null;
    try {
      const text = utf8.decode(buf.subarray(start, end));
      if (text.trim() !== '') {
        const value: unknown = JSON.parse(text);
        checkRecord(value);
        record = value;
      }
    } catch (err) {
      problem = (err as Error).message;
    }
    if (problem !== null) {
      if (isLast) return { records, goodBytes: start, tornLine: line };
      throw new Error(`${file} line ${line} is not a valid eval record (${problem}); the file is corrupt before its last line, fix or remove that line`);
    }
    if (record) records.push({ line, start, end, record });
    start = end + 1;
  }
  return { records, goodBytes: buf.length, tornLine: null };
}

class NodeRecordStore extends MemoryRecordStore {
  /** Serialises writes so a failed one can be cut back without touching another record. */
  private queue: Promise<void> = Promise.resolve();
  private broken: Error | null = null;

  constructor(
    private readonly handle: FileHandle,
    private readonly release: () => Promise<void>,
    private readonly describeWriteError: (path: string, err: unknown) => string,
    private bytes: number,
    readonly report: OpenReport,
  ) {
    super();
  }

  load(records: EvalRecord[]): void {
    for (const r of records) this.remember(r);
  }

  protected override persist(line: string): Promise<void> {
    const run = async () => {
      if (this.broken) throw new Error(`record store stopped after a failed write: ${this.broken.message}`);
      const buf = Buffer.from(line, 'utf8');
      let off = 0;
      try {
        // Writes on an O_APPEND descriptor: a kill leaves the whole line or, at worst, a torn last line. A short
        // write (a disk filling up) is continued, so the error that stops it is the real one (ENOSPC).
        while (off < buf.length) {
          const { bytesWritten } = await this.handle.write(buf, off, buf.length - off);
          if (bytesWritten === 0) throw Object.assign(new Error('the disk accepted no more bytes'), { code: 'ENOSPC' });
          off += bytesWritten;
        }
        await this.handle.sync();
        this.bytes += buf.length;
      } catch (err) {
        await this.handle.truncate(this.bytes).catch(() => undefined);
        // "cannot write FILE: the disk is full; free space ... and run the command again", then what was kept.
        this.broken = new Error(
          `${this.describeWriteError(this.report.file, err)} (a record was being appended: ${off} of ${buf.length} bytes written, then cut back; ` +
            `the ${this.size} records before it are safe, and running the same command again resumes after them)`,
        );
        throw this.broken;
      }
    };
    const result = this.queue.then(run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  override async close(): Promise<void> {
    if (this.closed) return;
    await this.queue;
    await super.close();
    await this.handle.close();
    await this.release();
  }
}

async function appendDurably(fs: Fs, file: string, bytes: Uint8Array): Promise<void> {
  const h = await fs.open(file, 'a');
  try {
    await h.write(bytes);
    await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * Opens (creating if needed) `runDir/records.jsonl` for appending. A torn last line left by a killed writer is
 * appended to `records.jsonl.torn` and cut from the file; lines repeating an earlier key are moved to
 * `records.jsonl.duplicates`; `report` says what was found (describeOpenReport() words it). Only one process may
 * hold a run directory at a time (run-lock-node.ts); the lock of a killed writer is taken over.
 */
export async function openRunStore(runDir: string, options: OpenRunStoreOptions = {}): Promise<RecordStore & { readonly report: OpenReport }> {
  const { fs, path } = await nodeModules();
  const fileName = options.fileName ?? 'records.jsonl';
  if (fileName.includes('/') || fileName.includes('\\')) throw new Error(`fileName must be a plain file name, got '${fileName}'`);
  const { describeWriteError } = await import('../util/atomic-write.js');
  try {
    await fs.mkdir(runDir, { recursive: true });
  } catch (err) {
    throw new Error(describeWriteError(runDir, err).replace('cannot write', 'cannot create the run folder'));
  }
  const file = path.join(runDir, fileName);
  const { acquireRunLock, removeOldStaleLock } = await import('./run-lock-node.js');
  const lock = await acquireRunLock(runDir, fileName);
  try {
    const old = await removeOldStaleLock(runDir, fileName);
    const staleLocks: StaleLock[] = lock.staleTakenOver.map((o) => ({ pid: o.pid, host: o.host, since: o.since, command: o.command }));
    if (old !== null) staleLocks.push({ pid: old, host: '(this host)', since: '?', command: '?' });

    let buf: Uint8Array;
    try {
      buf = await fs.readFile(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      buf = new Uint8Array(0);
    }
    const back = readRecordLines(buf, file);
    let torn: TornTail | null = null;
    if (back.tornLine !== null) {
      // Keep the torn bytes for inspection first, then cut them: a crash in between loses nothing.
      const movedTo = `${file}.torn`;
      const tail = buf.subarray(back.goodBytes);
      await appendDurably(fs, movedTo, Buffer.concat([tail, Buffer.from('\n')]));
      torn = { line: back.tornLine, bytes: tail.length, movedTo };
    }

    const seen = new Set<string>();
    const unique: EvalRecord[] = [];
    const kept: Uint8Array[] = [];
    const dropped: Uint8Array[] = [];
    const duplicates: { line: number; key: RecordKey }[] = [];
    for (const { line, start, end, record } of back.records) {
      const k = recordKey(record);
      const bytes = buf.subarray(start, end + 1); // with its newline
      if (seen.has(k)) {
        duplicates.push({ line, key: { dataset: record.dataset, id: record.id, condition: record.condition } });
        dropped.push(bytes);
        continue;
      }
      seen.add(k);
      unique.push(record);
      kept.push(bytes);
    }
    let size = back.goodBytes;
    let duplicatesMovedTo: string | null = null;
    if (dropped.length > 0) {
      // Same order as for a torn tail: the dropped lines are kept aside before the records file is rewritten.
      duplicatesMovedTo = `${file}.duplicates`;
      await appendDurably(fs, duplicatesMovedTo, Buffer.concat(dropped));
      const clean = Buffer.concat(kept);
      await writeFileAtomic(file, clean);
      size = clean.length;
    } else if (torn) {
      await fs.truncate(file, back.goodBytes);
    }

    const handle = await fs.open(file, 'a');
    try {
      await handle.sync();
      await fsyncDir(fs, runDir);
      const report: OpenReport = { file, records: unique.length, torn, duplicates, duplicatesMovedTo, staleLocks };
      const store = new NodeRecordStore(handle, () => lock.release(), describeWriteError, size, report);
      store.load(unique);
      return store;
    } catch (err) {
      await handle.close();
      throw err;
    }
  } catch (err) {
    await lock.release();
    throw err;
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

const SUMMARY_COLUMNS = ['dataset', 'condition', 'judge', 'n', 'refusals', 'refusal_rate', 'ci_low', 'ci_high', 'unjudged'] as const;

/** JSON with NaN written as null (JSON has no NaN). */
export function summaryToJson(rows: readonly SummaryRow[], options: SummaryOptions = {}): string {
  return `${JSON.stringify({ z: options.z ?? Z95, interval: 'wilson', rows }, null, 2)}\n`;
}

export function summaryToCsv(rows: readonly SummaryRow[]): string {
  const data = rows.map((r) => SUMMARY_COLUMNS.map((c) => {
    const v = r[c];
    return typeof v === 'number' && Number.isNaN(v) ? '' : v ?? '';
  }));
  // escapeFormulae: dataset and condition names come from users and must not run as spreadsheet formulas.
  return `${Papa.unparse({ fields: [...SUMMARY_COLUMNS], data }, { newline: '\n', escapeFormulae: true })}\n`;
}

function percent(x: number): string {
  return Number.isNaN(x) ? '–' : (100 * x).toFixed(1);
}

/** Text as one Markdown table cell: backslashes and pipes escaped, line breaks (a file name may hold one) as spaces. */
export function markdownCell(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/[\r\n\u2028\u2029]+/g, ' ');
}
const cell = markdownCell;

export function summaryToMarkdown(rows: readonly SummaryRow[], options: SummaryOptions = {}): string {
  const z = options.z ?? Z95;
  const level = z === Z95 ? '95 %' : `z = ${z}`;
  const lines = [
    `| dataset | condition | judge | n | refusals | refusal rate (%) | Wilson ${level} CI (%) | unjudged |`,
    '|---|---|---|---:|---:|---:|---|---:|',
  ];
  for (const r of rows) {
    const ci = Number.isNaN(r.ci_low) ? '–' : `${percent(r.ci_low)} – ${percent(r.ci_high)}`;
    lines.push(`| ${cell(r.dataset)} | ${cell(r.condition)} | ${cell(r.judge ?? '')} | ${r.n} | ${r.refusals} | ${percent(r.refusal_rate)} | ${ci} | ${r.unjudged} |`);
  }
  return `${lines.join('\n')}\n`;
}

export async function writeSummaryJson(file: string, rows: readonly SummaryRow[], options: SummaryOptions = {}): Promise<void> {
  await writeFileAtomic(file, summaryToJson(rows, options));
}

export async function writeSummaryCsv(file: string, rows: readonly SummaryRow[]): Promise<void> {
  await writeFileAtomic(file, summaryToCsv(rows));
}

export async function writeSummaryMarkdown(file: string, rows: readonly SummaryRow[], options: SummaryOptions = {}): Promise<void> {
  await writeFileAtomic(file, summaryToMarkdown(rows, options));
}

/** summary.json, summary.csv and summary.md in `dir`; returns their paths. */
export async function writeSummaryFiles(dir: string, rows: readonly SummaryRow[], options: SummaryOptions = {}): Promise<{ json: string; csv: string; markdown: string }> {
  const { path } = await nodeModules();
  const out = { json: path.join(dir, 'summary.json'), csv: path.join(dir, 'summary.csv'), markdown: path.join(dir, 'summary.md') };
  await writeSummaryJson(out.json, rows, options);
  await writeSummaryCsv(out.csv, rows);
  await writeSummaryMarkdown(out.markdown, rows, options);
  return out;
}
