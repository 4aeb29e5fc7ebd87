/**
 * The list of directions or controllers saved in this browser for the loaded model, shared by the Direction and
 * Controller panels: one place that lists, refreshes after a save, and deletes.
 */
import { deleteArtefact, listArtefacts, type ArtefactKind, type StoredArtefact } from './artefacts.js';

export interface SavedArtefacts {
  readonly items: StoredArtefact[];
  /** Re-reads IndexedDB for `modelId` (call after a save). */
  refresh(modelId: string | null): Promise<void>;
  remove(a: StoredArtefact, modelId: string | null): Promise<void>;
}

export function savedArtefacts(kind: ArtefactKind, onError: (e: unknown) => void): SavedArtefacts {
  let items = $state<StoredArtefact[]>([]);
  const refresh = async (modelId: string | null) => {
    if (!modelId) return;
    try {
      items = await listArtefacts(modelId, kind);
    } catch (e) {
      onError(e);
    }
  };
  return {
    get items() {
      return items;
    },
    refresh,
    async remove(a, modelId) {
      await deleteArtefact(a.id);
      await refresh(modelId);
    },
  };
}
