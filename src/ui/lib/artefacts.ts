/**
 * Trained artefacts in IndexedDB (idb): directions and controllers, as the same bytes their files hold
 * (safetensors), plus small JSON extras (a direction's CAST condition and separation plot). They survive a reload;
 * the lab restores the newest of each kind for the loaded model.
 */
import { openDB, type DBSchema, type IDBPDatabase } from 'idb';

export type ArtefactKind = 'direction' | 'controller';

export interface StoredArtefact {
  id: string;
  kind: ArtefactKind;
  name: string;
  modelId: string;
  createdAt: string;
  bytes: Uint8Array;
  /** JSON-safe extras (numbers, strings, arrays): never functions or typed arrays other than the bytes. */
  extra: Record<string, unknown>;
}

interface ArtefactSchema extends DBSchema {
  artefacts: { key: string; value: StoredArtefact; indexes: { byModel: [string, string] } };
}

const DB_NAME = 'steerlab-artefacts';
let db: Promise<IDBPDatabase<ArtefactSchema>> | null = null;

function open(): Promise<IDBPDatabase<ArtefactSchema>> {
  if (typeof indexedDB === 'undefined') return Promise.reject(new Error('IndexedDB is not available: artefacts cannot be kept'));
  db ??= openDB<ArtefactSchema>(DB_NAME, 1, {
    upgrade(d) {
      const s = d.createObjectStore('artefacts', { keyPath: 'id' });
      s.createIndex('byModel', ['modelId', 'kind']);
    },
  }).catch((e) => {
    db = null;
    throw e;
  });
  return db;
}

export function newArtefactId(kind: ArtefactKind): string {
  return `${kind}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

export async function saveArtefact(a: StoredArtefact): Promise<void> {
  if (!(a.bytes instanceof Uint8Array) || a.bytes.length === 0) throw new TypeError(`artefact ${a.name}: bytes must be a non-empty Uint8Array`);
  await (await open()).put('artefacts', { ...a, extra: JSON.parse(JSON.stringify(a.extra)) as Record<string, unknown> });
}

/** Artefacts of one kind made for `modelId`, newest first. */
export async function listArtefacts(modelId: string, kind: ArtefactKind): Promise<StoredArtefact[]> {
  const all = await (await open()).getAllFromIndex('artefacts', 'byModel', [modelId, kind]);
  return all.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0));
}

export async function deleteArtefact(id: string): Promise<void> {
  await (await open()).delete('artefacts', id);
}
