/**
 * The record store as a JSONL file in a run directory (Node): `runDir/records.jsonl`, one record per line, each
 * append one write(2) on an O_APPEND descriptor followed by fsync, one writer per folder (a lock file). A torn last
 * line left by a killed writer is set aside on open; corruption before the last line stops the open with its line.
 */
import * as fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { MemoryRecordStore, checkRecord, recordKey, type EvalRecord, type RecordKey, type RecordStore } from './records.js';

export interface TornTail {
  /** 1-based line of the file where the torn record started. */
  line: number;
  bytes: number;
  /** File the torn bytes were appended to (the main file is then truncated to its last full line). */
  movedTo: string;
}

export interface OpenReport {
  file: string;
  /** Records read back from the file. */
  records: number;
  /** The partial last line of a killed writer, set aside; null when the file ended cleanly. */
  torn: TornTail | null;
  /** Lines repeating an earlier key (only possible if something else wrote the file): the first one is kept. */
  duplicates: { line: number; key: RecordKey }[];
  /** A lock left by a writer that no longer runs (killed), removed on open. */
  staleLockPid: number | null;
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

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** One writer per run directory: a second one would interleave and duplicate records. */
async function takeLock(fs: Fs, lockFile: string): Promise<number | null> {
  let stale: number | null = null;
  for (let attempt = 0; attempt < 2; attempt++) {
    // Write the pid to a private file and hard-link it into place: the lock appears atomically, never empty.
    const tmp = `${lockFile}.${process.pid}.tmp`;
    await fs.writeFile(tmp, `${process.pid}\n`);
    try {
      await fs.link(tmp, lockFile);
      return stale;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      await fs.rm(tmp, { force: true });
    }
    const pid = Number.parseInt((await fs.readFile(lockFile, 'utf8').catch(() => '')).trim(), 10);
    if (pid === process.pid) throw new Error(`run store ${lockFile} is already open in this process: close it first`);
    if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) {
      throw new Error(`run store is in use by process ${pid} (lock ${lockFile}); stop that run or wait for it`);
    }
    stale = Number.isInteger(pid) ? pid : -1;
    await fs.rm(lockFile, { force: true });
  }
  throw new Error(`could not take the lock ${lockFile}: another process keeps creating it`);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

interface ReadBack {
  records: { line: number; record: EvalRecord }[];
  /** Byte length of the good prefix; anything after it is a torn tail. */
  goodBytes: number;
  tornLine: number | null;
}

/**
 * Splits the file into finished records and a torn tail. Only the last line can be torn (every append is one
 * write of a whole line); a bad line anywhere else is corruption and stops the open with its line number.
 */
function readBack(buf: Buffer, file: string): ReadBack {
  const records: { line: number; record: EvalRecord }[] = [];
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
    if (record) records.push({ line, record });
    start = end + 1;
  }
  return { records, goodBytes: buf.length, tornLine: null };
}

class NodeRecordStore extends MemoryRecordStore {
  /** Serialises writes so a failed one can be cut back without touching another record. */
  private queue: Promise<void> = Promise.resolve();
  private broken: Error | null = null;

  constructor(
    private readonly fs: Fs,
    private readonly handle: FileHandle,
    private readonly lockFile: string,
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
      try {
        // One write(2) on an O_APPEND descriptor: a kill leaves the whole line or, at worst, a torn last line.
        const { bytesWritten } = await this.handle.write(buf, 0, buf.length);
        if (bytesWritten !== buf.length) throw new Error(`short write (${bytesWritten} of ${buf.length} bytes)`);
        await this.handle.sync();
        this.bytes += buf.length;
      } catch (err) {
        this.broken = err as Error;
        await this.handle.truncate(this.bytes).catch(() => undefined);
        throw err;
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
    await this.fs.rm(this.lockFile, { force: true });
  }
}

/**
 * Opens (creating if needed) `runDir/records.jsonl` for appending. A torn last line left by a killed writer is
 * appended to `records.jsonl.torn` and cut from the file; `report` says what was found. Only one writer may hold a
 * run directory; a lock left by a dead process is cleared.
 */
export async function openRunStore(runDir: string, options: OpenRunStoreOptions = {}): Promise<RecordStore & { readonly report: OpenReport }> {
  const fs = fsp;
  const fileName = options.fileName ?? 'records.jsonl';
  if (fileName.includes('/') || fileName.includes('\\')) throw new Error(`fileName must be a plain file name, got '${fileName}'`);
  await fs.mkdir(runDir, { recursive: true });
  const file = path.join(runDir, fileName);
  const lockFile = `${file}.lock`;
  const staleLockPid = await takeLock(fs, lockFile);

  try {
    const handle = await fs.open(file, 'a+');
    try {
      const buf = await fs.readFile(file);
      const back = readBack(buf, file);
      let torn: TornTail | null = null;
      if (back.tornLine !== null) {
        // Keep the torn bytes for inspection first, then cut them: a crash in between loses nothing.
        const movedTo = `${file}.torn`;
        const tail = buf.subarray(back.goodBytes);
        const tornHandle = await fs.open(movedTo, 'a');
        try {
          await tornHandle.write(Buffer.concat([tail, Buffer.from('\n')]));
          await tornHandle.sync();
        } finally {
          await tornHandle.close();
        }
        await handle.truncate(back.goodBytes);
        await handle.sync();
        torn = { line: back.tornLine, bytes: tail.length, movedTo };
      }
      await fsyncDir(fs, runDir);

      const seen = new Set<string>();
      const unique: EvalRecord[] = [];
      const duplicates: { line: number; key: RecordKey }[] = [];
      for (const { line, record } of back.records) {
        const k = recordKey(record);
        if (seen.has(k)) {
          duplicates.push({ line, key: { dataset: record.dataset, id: record.id, condition: record.condition } });
          continue;
        }
        seen.add(k);
        unique.push(record);
      }
      const report: OpenReport = { file, records: unique.length, torn, duplicates, staleLockPid };
      const store = new NodeRecordStore(fs, handle, lockFile, back.goodBytes, report);
      store.load(unique);
      return store;
    } catch (err) {
      await handle.close();
      throw err;
    }
  } catch (err) {
    await fs.rm(lockFile, { force: true });
    throw err;
  }
}

