/**
 * The one error type of the ONNX patcher. `code` is stable (tests and the CLI branch on it); the message names what
 * was found and what was expected.
 */
export type OnnxPatchErrorCode =
  | 'EMPTY_INPUT'
  | 'MALFORMED_PROTOBUF'
  | 'NO_GRAPH'
  | 'OPSET_TOO_OLD'
  | 'MISSING_OPSET'
  | 'NO_INPUT_IDS'
  | 'NOT_A_DECODER'
  | 'NO_EMBEDDING'
  | 'NO_RESIDUAL_STREAM'
  | 'RESIDUAL_CHAIN_AMBIGUOUS'
  | 'ODD_PRODUCER_COUNT'
  | 'LAYER_COUNT_MISMATCH'
  | 'HIDDEN_SIZE_MISMATCH'
  | 'UNSUPPORTED_DTYPE'
  | 'MERGED_BRANCHES_DIFFER'
  | 'ALREADY_PATCHED'
  | 'BAD_OPTIONS'
  | 'IO_ERROR'
  | 'UNEXPECTED';

export class OnnxPatchError extends Error {
  constructor(readonly code: OnnxPatchErrorCode | string, message: string) {
    super(message);
    this.name = 'OnnxPatchError';
  }
}
