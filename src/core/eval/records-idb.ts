/**
 * The eval record store (records.ts) on IndexedDB, for the lab in the browser: one object store keyed by
 * [run, dataset, id, condition], so every run's records survive a reload and an interrupted run resumes by skipping
 * what `has()` says is done. Each append is its own readwrite transaction, committed before append() resolves,
 * so a closed tab loses at most the record that was in flight (the same promise the JSONL store makes).
 *
 * Run descriptions (the settings a run was started with, its status) sit in a second object store, so the lab can
 * list past runs and offer "resume" without the UI keeping its own copy.
 */
import { openDB, type DBSchema, type IDBPDatabase } from 'idb';
import { MemoryRecordStore, checkRecord, type EvalRecord } from './records.js';

export const EVAL_DB_NAME = 'steerlab-eval';
const DB_VERSION = 1;

/** A run as the lab describes it: free-form settings plus a status the runner keeps up to date. */
export interface EvalRunInfo {
  id: string;
  /** ISO 8601 creation time. */
  createdAt: string;
  status: 'running' | 'done' | 'cancelled' | 'failed';
  /** Everything needed to resume: datasets, N, seed, conditions, model id, judge... (JSON). */
  settings: Record<string, unknown>;
  /** Number of (prompt, condition) items the run plans to do. */
  planned: number;
  error?: string;
}

interface StoredRecord {
  run: string;
  dataset: string;
  id: string;
  condition: string;
  /** Append order within the run. */
  seq: number;
  record: EvalRecord;
}

interface EvalSchema extends DBSchema {
  records: { key: [string, string, string, string]; value: StoredRecord; indexes: { byRun: [string, number] } };
  runs: { key: string; value: EvalRunInfo };
}

let dbPromise: Promise<IDBPDatabase<EvalSchema>> | null = null;

/** Opens (once per page) the eval database. `name` lets tests use a database of their own. */
export function openEvalDb(name = EVAL_DB_NAME): Promise<IDBPDatabase<EvalSchema>> {
  if (typeof indexedDB === 'undefined') return Promise.reject(new Error('IndexedDB is not available here: eval results cannot be stored'));
  const open = () =>
    openDB<EvalSchema>(name, DB_VERSION, {
      upgrade(db) {
        const records = db.createObjectStore('records', { keyPath: ['run', 'dataset', 'id', 'condition'] });
        records.createIndex('byRun', ['run', 'seq']);
        db.createObjectStore('runs', { keyPath: 'id' });
      },
    });
  if (name !== EVAL_DB_NAME) return open();
  dbPromise ??= open().catch((e) => {
    dbPromise = null;
    throw e;
  });
  return dbPromise;
}

/** A RecordStore whose records live in IndexedDB under one run id. */
export class IdbRecordStore extends MemoryRecordStore {
  private seq: number;

  private constructor(private readonly db: IDBPDatabase<EvalSchema>, readonly runId: string, initial: StoredRecord[]) {
    super();
    for (const s of initial) this.remember(s.record);
    this.seq = initial.length === 0 ? 0 : initial[initial.length - 1]!.seq + 1;
  }

  /** Loads the run's stored records (append order) and returns a store that appends to them. */
  static async open(runId: string, db?: IDBPDatabase<EvalSchema>): Promise<IdbRecordStore> {
    if (typeof runId !== 'string' || runId === '') throw new TypeError('IdbRecordStore.open: runId must be a non-empty string');
    const d = db ?? (await openEvalDb());
    const rows = await d.getAllFromIndex('records', 'byRun', IDBKeyRange.bound([runId, -Infinity], [runId, Infinity]));
    return new IdbRecordStore(d, runId, rows);
  }

  protected override async persist(_line: string, record: EvalRecord): Promise<void> {
    checkRecord(record);
    const row: StoredRecord = { run: this.runId, dataset: record.dataset, id: record.id, condition: record.condition, seq: this.seq++, record };
    const tx = this.db.transaction('records', 'readwrite');
    // add(), not put(): a key that is somehow already stored is an error, never a silent overwrite.
    await Promise.all([tx.store.add(row), tx.done]);
  }
}

/** Run descriptions: create, update, list (newest first), delete with their records. */
export async function saveRun(run: EvalRunInfo, db?: IDBPDatabase<EvalSchema>): Promise<void> {
  if (!run || typeof run.id !== 'string' || run.id === '') throw new TypeError('saveRun: run.id must be a non-empty string');
  const d = db ?? (await openEvalDb());
  await d.put('runs', JSON.parse(JSON.stringify(run)) as EvalRunInfo);
}

export async function listRuns(db?: IDBPDatabase<EvalSchema>): Promise<EvalRunInfo[]> {
  const d = db ?? (await openEvalDb());
  const runs = await d.getAll('runs');
  return runs.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0));
}

export async function deleteRun(runId: string, db?: IDBPDatabase<EvalSchema>): Promise<void> {
  const d = db ?? (await openEvalDb());
  const tx = d.transaction(['records', 'runs'], 'readwrite');
  const records = tx.objectStore('records');
  let cursor = await records.index('byRun').openKeyCursor(IDBKeyRange.bound([runId, -Infinity], [runId, Infinity]));
  while (cursor) {
    await records.delete(cursor.primaryKey);
    cursor = await cursor.continue();
  }
  await tx.objectStore('runs').delete(runId);
  await tx.done;
}
