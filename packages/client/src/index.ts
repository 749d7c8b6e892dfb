export { PullmanClient, type PageOptions, type PullmanClientOptions, type SubmitOptions, type WaitOptions } from './client.js';
export { PullmanApiError, PullmanConnectionError, describeFetchFailure, type ClientErrorCode } from './errors.js';
export { NDJSON_CONTENT_TYPE, encodeNdjson, splitLines, type TaskSource } from './ndjson.js';
