/**
 * Where an ONNX tensor's external data may be read from: a plain relative path inside the folder of its graph file.
 * Every place that resolves a `location` checks it here (the loader, the weights reader), so a graph cannot make
 * Steerlab read a file outside the model's folder, or outside its hub repository in the browser. Pure (no Node APIs).
 */

/** A tensor's external-data `location` that would be read from outside the model's folder (or hub repository). */
export class ExternalDataLocationError extends Error {
  readonly code = 'EXTERNAL_DATA_OUTSIDE_MODEL';
  constructor(message: string) {
    super(message);
    this.name = 'ExternalDataLocationError';
  }
}

/**
 * Why `location` may not be read, or null when it is a plain relative path inside the folder of the graph file.
 * Refused: absolute paths (POSIX, Windows drive or UNC), backslashes, `.` / `..` / empty segments, and the URL
 * characters that could climb out once the path is put into a hub URL (`%` as in `%2e%2e`, `?`, `#`, `:`), so the
 * same rule confines a local folder and a hub repository. onnxruntime refuses such paths itself ("External data
 * path escapes model directory"); Steerlab reads external data on its own paths too, and must refuse them there.
 */
export function externalLocationProblem(location: string): string | null {
  if (location === '') return 'it is empty';
  if (/[\u0000-\u001f\u007f]/.test(location)) return 'it holds control characters';
  if (location.startsWith('/') || location.includes('\\') || /^[A-Za-z]:/.test(location)) return 'it is an absolute path';
  if (/[%?#:]/.test(location)) return 'it holds one of % ? # :, which would change its meaning in a URL';
  const bad = location.split('/').find((seg) => seg === '' || seg === '.' || seg === '..');
  if (bad !== undefined) return bad === '..' ? 'it climbs out with ..' : `it has an empty or '.' path segment`;
  return null;
}

/** Throws ExternalDataLocationError unless `location` stays inside the folder of `graphFile`. */
export function checkExternalLocation(location: string, graphFile: string): void {
  const why = externalLocationProblem(location);
  if (why !== null) {
    throw new ExternalDataLocationError(
      `${graphFile} names external data at ${JSON.stringify(location)}, which points outside the model folder (${why}); ` +
        'a model may only read weights from files inside its own folder. Fix the tensor locations (lab patch --rename-external-data OLD=NEW) or get the model from its source again',
    );
  }
}

