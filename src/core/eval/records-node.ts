/**
 * The record store as a JSONL file in a run directory (Node): `runDir/records.jsonl`, one record per line, each
 * append written on an O_APPEND descriptor and fsynced, one writer per folder (run-lock-node.ts). On open, a torn
 * last line left by a killed writer and lines repeating an earlier key are set aside in sibling files and reported
 * (describeOpenReport); corruption before the last line stops the open with its line.
 */
import * as fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { describeWriteError, writeFileAtomic } from '../util/atomic-write.js';
import { MemoryRecordStore, checkRecord, recordKey, type EvalRecord, type RecordKey, type RecordStore } from './records.js';
import { acquireRunLock, removeOldStaleLock } from './run-lock-node.js';

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

type Fs = typeof fsp;

async function fsyncDir(fs: Fs, dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
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
  const fs = fsp;
  const fileName = options.fileName ?? 'records.jsonl';
  if (fileName.includes('/') || fileName.includes('\\')) throw new Error(`fileName must be a plain file name, got '${fileName}'`);
  try {
    await fs.mkdir(runDir, { recursive: true });
  } catch (err) {
    throw new Error(describeWriteError(runDir, err).replace('cannot write', 'cannot create the run folder'));
  }
  const file = path.join(runDir, fileName);
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
